import pytest
import torch

from grasp_lora.pruning.groups import FactorGroup
from grasp_lora.pruning.state import MaskState


def make_groups(seed=0):
    g = torch.Generator().manual_seed(seed)

    def p(*shape):
        return torch.nn.Parameter(torch.randn(*shape, generator=g) + 0.01)  # no exact zeros

    # two modules, the second merged from two adapters: factors = A0,B0 | A1,A2,B1,B2
    return [
        FactorGroup("l0.q", 0, [p(2, 5)], [p(4, 2)]),
        FactorGroup("l1.v", 1, [p(2, 5), p(2, 5)], [p(3, 2), p(3, 2)]),
    ]


def weights(ms):
    return [p.detach().clone() for p in ms.factors]


def bits(t):
    return t.view(torch.int32)


def test_masks_at_ratio_list_and_dict():
    ms = MaskState(make_groups())
    assert len(ms.factors) == 6
    imp = [p.detach().abs() for p in ms.factors]
    masks = ms.masks_at_ratio(imp, 0.5)
    assert [int(m.sum()) for m in masks] == [5, 4, 5, 5, 3, 3]
    masks2 = ms.masks_at_ratio({k: t for k, t in enumerate(imp)}, 0.5)
    assert all(torch.equal(a, b) for a, b in zip(masks, masks2))
    with pytest.raises(KeyError):
        ms.masks_at_ratio({0: imp[0]}, 0.5)
    assert ms.committed_sparsity() == 0.0 and ms.committed_ratio is None


def test_candidate_replaces_committed_and_restores_bit_for_bit():
    ms = MaskState(make_groups())
    original = weights(ms)
    imp = [w.abs() for w in original]
    m1 = ms.masks_at_ratio(imp, 0.4)
    ms.commit(m1, ratio=0.4)
    # training moves the live entries; re-zero keeps the committed ones at 0
    with torch.no_grad():
        for p in ms.factors:
            p.add_(0.125)
    ms.rezero()
    # make one live weight a negative zero: restoring must keep its sign bit
    with torch.no_grad():
        live = ~m1[0]
        idx = live.nonzero()[0]
        ms.factors[0][idx[0], idx[1]] = -0.0
    before = weights(ms)
    # the candidate: a different ranking (reverse magnitude) at ratio 0.3
    m2 = ms.masks_at_ratio([-w for w in imp], 0.3)
    with ms.candidate(m2):
        for k, p in enumerate(ms.factors):
            w = p.detach()
            assert (w[m2[k]] == 0).all()
            out = m1[k] & ~m2[k]  # committed, released by the candidate: stashed original values
            assert out.any()
            assert torch.equal(w[out], original[k][out])
            rest = ~m1[k] & ~m2[k]
            assert torch.equal(w[rest], before[k][rest])
    after = weights(ms)
    for b, a in zip(before, after):
        assert torch.equal(bits(b), bits(a))


def test_candidate_restores_on_exception():
    ms = MaskState(make_groups())
    before = weights(ms)
    m = ms.masks_at_ratio([w.abs() for w in before], 0.5)
    with pytest.raises(RuntimeError, match="boom"):
        with ms.candidate(m):
            assert ms.factors[0].detach()[m[0]].abs().sum() == 0
            raise RuntimeError("boom")
    assert all(torch.equal(bits(b), bits(a)) for b, a in zip(before, weights(ms)))


def test_commit_stash_release_and_optimizer_state():
    ms = MaskState(make_groups())
    params = ms.factors
    opt = torch.optim.AdamW(params, lr=0.1)
    sum(p.sum() * (k + 1) for k, p in enumerate(params)).backward()
    opt.step()
    opt.zero_grad()
    at_commit = weights(ms)
    imp = [w.abs() for w in at_commit]
    m1 = ms.masks_at_ratio(imp, 0.3)
    counts = ms.commit(m1, optimizer=opt, ratio=0.3)
    assert counts["newly_pruned"] == counts["pruned"] == sum(int(m.sum()) for m in m1)
    assert counts["released"] == 0
    for k, p in enumerate(params):
        assert (p.detach()[m1[k]] == 0).all()
        assert torch.equal(p.detach()[~m1[k]], at_commit[k][~m1[k]])
        st = opt.state[p]
        assert (st["exp_avg"][m1[k]] == 0).all() and (st["exp_avg_sq"][m1[k]] == 0).all()
        assert (st["exp_avg"][~m1[k]] != 0).all() and (st["exp_avg_sq"][~m1[k]] != 0).all()
        assert float(st["step"]) == 1.0  # scalar entries untouched
    total = sum(p.numel() for p in params)
    assert ms.committed_sparsity() == pytest.approx(sum(int(m.sum()) for m in m1) / total)
    assert ms.committed_ratio == 0.3

    # a step revives pruned entries; rezero puts them back
    sum((p * (k + 2)).sum() for k, p in enumerate(params)).backward()
    opt.step()
    opt.zero_grad()
    assert any((p.detach()[m] != 0).any() for p, m in zip(params, m1))
    ms.rezero()
    assert all((p.detach()[m] == 0).all() for p, m in zip(params, m1))
    live_before = weights(ms)
    exp_avg_before = [opt.state[p]["exp_avg"].clone() for p in params]

    # new mask: a shifted one; released entries get their values from the first commit
    m2 = [torch.roll(m, 1, dims=-1) for m in m1]
    ms.commit(m2, optimizer=opt, ratio=0.3)
    for k, p in enumerate(params):
        w = p.detach()
        released, newly = m1[k] & ~m2[k], m2[k] & ~m1[k]
        assert torch.equal(w[released], at_commit[k][released])
        assert (w[m2[k]] == 0).all()
        untouched = ~m1[k] & ~m2[k]
        assert torch.equal(w[untouched], live_before[k][untouched])
        ea = opt.state[p]["exp_avg"]
        assert (ea[newly] == 0).all()
        assert torch.equal(ea[~newly], exp_avg_before[k][~newly])  # only newly pruned zeroed
    assert any(bool((m1[k] & m2[k]).any()) for k in range(len(params)))
    # entries pruned in both commits keep their ORIGINAL stash (first commit) for a later release
    ms.commit([torch.zeros_like(m) for m in m2])  # release everything
    for k, p in enumerate(params):
        w = p.detach()
        assert torch.equal(w[m1[k] & m2[k]], at_commit[k][m1[k] & m2[k]])
        assert torch.equal(w[m2[k] & ~m1[k]], live_before[k][m2[k] & ~m1[k]])
    assert ms.committed_sparsity() == 0.0


def test_state_dict_round_trip():
    groups = make_groups(1)
    ms = MaskState(groups)
    original = weights(ms)
    m1 = ms.masks_at_ratio([w.abs() for w in original], 0.5)
    ms.commit(m1, ratio=0.5)
    sd = ms.state_dict()

    # a fresh process: same weights as saved (pruned) but with garbage at masked entries
    groups2 = make_groups(1)
    ms2 = MaskState(groups2)
    with torch.no_grad():
        for p in ms2.factors:
            p.add_(1.0)
    ms2.load_state_dict(sd)
    assert ms2.committed_ratio == 0.5 and ms2.has_commit
    assert ms2.committed_sparsity() == ms.committed_sparsity()
    for p, m in zip(ms2.factors, m1):
        assert (p.detach()[m] == 0).all()  # load re-zeroes
    ms2.commit([torch.zeros_like(m) for m in m1])
    for p, w, m in zip(ms2.factors, original, m1):
        assert torch.equal(p.detach()[m], w[m])  # released from the loaded stash


def test_mask_validation():
    ms = MaskState(make_groups())
    good = [torch.zeros(p.shape, dtype=torch.bool) for p in ms.factors]
    with pytest.raises(ValueError):
        ms.commit(good[:-1])
    bad = list(good)
    bad[0] = torch.zeros(3, 3, dtype=torch.bool)
    with pytest.raises(ValueError):
        ms.commit(bad)
    with pytest.raises(ValueError):
        ms.commit([m.float() for m in good])
    with ms.candidate(good):
        with pytest.raises(RuntimeError):
            ms.commit(good)
