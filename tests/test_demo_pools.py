"""The bundled demo pools: frozen package data, exactly what scripts/make_demo_pools.py generates.

The digests pin the files, so the demo's data (and with it the demo's numbers) cannot change
unless this test is edited on purpose. The rows in OLD_ROWS were printed by the in-code generator
the files replaced (grasp_lora.data.demo up to commit 1ac9f13), which built every pool at run time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

from grasp_lora.data.demo import LANGUAGES, POOL_SIZE, POOLS_DIR, demo_pool, pool_file

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("mlqa", "xlsum")

DIGESTS = {
    "mlqa.en.jsonl": "2801ac5d757b25198af2f24f1a335407bf0a09dff0f1b1cbc4582694e4991f22",
    "mlqa.ar.jsonl": "acb2c2fd4eba061d8ce6e5a12b1f523bd5beb456617fcf1c8b7a6368db3bd5fc",
    "mlqa.zh.jsonl": "63da0f5f237eb1dce876593a7743901c2e47553d3d7a136961052fd57a76f023",
    "xlsum.en.jsonl": "a221da252fbad9965d2e476cc6bebf3a2cde99e417a9cdeb2c997042ce572301",
    "xlsum.ar.jsonl": "cd3067003b70612f52f8039e79ea1728ff5b5ecc02148ac686c27a2e571d2c9f",
    "xlsum.zh.jsonl": "73a6760b94ff6f5f876cf8fa1c3b88ed558dd4c4571307c6f23e263611875ddc",
}

OLD_ROWS = {
    ("mlqa", "en", 0): {
        "id": "demo-mlqa-en-0000",
        "context": "The Civic Trust opened a new school in Oakridge on 5 April. Construction took four years, and "
                   "residents had asked for the project for a long time. The project is part of a wider plan to "
                   "improve public services in the region. Opening hours will be longer during the summer months.",
        "question": "How long did work on the site last?",
        "answers": ["four years"],
    },
    ("mlqa", "ar", 200): {
        "id": "demo-mlqa-ar-0200",
        "context": "أعلنت شركة المرفأ للنسيج يوم 6 ديسمبر عزمها بناء مركز أبحاث جديد في مدينة العقبة. وأوضح محمد "
                   "العلي، الرئيس التنفيذي للشركة، أن المنطقة تتمتع بأيد عاملة ماهرة. ويُتوقع أن يعمل الموقع بكامل "
                   "طاقته بحلول عام 2030. وأبدى بعض السكان قلقهم من زيادة حركة المرور.",
        "question": "متى أعلنت شركة المرفأ للنسيج عن المشروع؟",
        "answers": ["6 ديسمبر"],
    },
    ("xlsum", "zh", 359): {
        "id": "demo-xlsum-zh-0359",
        "article": "9月2日，杭州至珠海的新快速公交线迎来首批乘客。线路长47公里，沿途停靠13个站。乘客的通行时间缩短至45分钟。"
                   "交通部长王丽表示，该线路每天将运送约20000名乘客。该线路由城市轨道公司负责运营。该线路建设历时数年，"
                   "实际花费超出预算。非高峰时段允许携带自行车。",
        "summary": "连接杭州和珠海的新快速公交线开通，全程只需45分钟。",
        "title": "杭州至珠海新快速公交线开通",
    },
}


def test_pool_files_are_the_pinned_ones():
    folder = Path(str(pool_file("mlqa", "en"))).parent
    assert folder.name == POOLS_DIR
    assert sorted(p.name for p in folder.iterdir()) == sorted(DIGESTS)
    for task in TASKS:
        for lang in LANGUAGES:
            name = f"{task}.{lang}.jsonl"
            assert hashlib.sha256(pool_file(task, lang).read_bytes()).hexdigest() == DIGESTS[name], name


def test_rows_are_those_the_in_code_generator_made():
    for task in TASKS:
        for lang in LANGUAGES:
            rows = demo_pool(task, lang)
            assert len(rows) == POOL_SIZE
            assert [r["id"] for r in rows] == [f"demo-{task}-{lang}-{i:04d}" for i in range(POOL_SIZE)]
    for (task, lang, index), row in OLD_ROWS.items():
        assert demo_pool(task, lang)[index] == row


def test_files_are_what_the_script_generates(monkeypatch):
    spec = importlib.util.spec_from_file_location("make_demo_pools", ROOT / "scripts" / "make_demo_pools.py")
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_demo_pools", script)  # dataclasses look their module up
    spec.loader.exec_module(script)
    assert tuple(script.TASK_KINDS) == TASKS and script.LANGUAGES == LANGUAGES
    for task in TASKS:
        for lang in LANGUAGES:
            assert script.pool_text(task, lang) == pool_file(task, lang).read_text(encoding="utf-8"), (task, lang)
    assert script.main(["--check"]) == 0
