#!/usr/bin/env python3
"""Generate the bundled demo pools, src/grasp_lora/data/demo_pools/<task>.<lang>.jsonl.

The pools are frozen package data (read by grasp_lora.data.demo); this script is how they were
made and how to remake them byte for byte. No grasp_lora import: it needs only the standard library.

    python scripts/make_demo_pools.py           # (re)write the six files
    python scripts/make_demo_pools.py --check   # exit 1 when a file differs from what it generates

A changed template, lexicon or seed changes the demo's data and so its numbers: regenerate on
purpose only, then update the digests pinned in tests/test_demo_pools.py.

What it writes: 360 short news-like records per pool, for `mlqa` (QA) or `xlsum` (summarisation)
in English, Arabic or Simplified Chinese; our own text, not MLQA / XL-Sum. Six kinds of news event
(a facility opening, a cup final, a company investment, a festival, a storm, a new transport line)
are written natively in each language, with two or three wordings per sentence, many people,
towns, organisations, numbers and dates. Each example samples the event's facts, renders them in
the language and builds:
- QA: a 4-5 sentence passage (about 40-80 words; Chinese about 60-120 characters) and a question
  (who / where / when / how many / how much / which) whose answer occurs exactly once in it;
- summary: a 6-7 sentence article (about 60-120 words) and a one-sentence summary that only
  states facts of the article.
Everything is drawn from a `random.Random` seeded by the task and language, so the output is the
same on every machine and Python run. Arabic counted nouns follow the number rules: counts are
multiples of 100 (the noun is then singular) and small counts are written out in words.

This file is over 400 lines because most of it is that template text (the lexicons and the six
events in three languages): one table read by one short generator, kept in one place.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import string
import sys
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "grasp_lora" / "data" / "demo_pools"

POOL_SIZE = 360
LANGUAGES = ("en", "ar", "zh")
TASK_KINDS = {"mlqa": "qa", "xlsum": "summary"}  # as in grasp_lora.data.tasks


@dataclass(frozen=True)
class Event:
    """One kind of news event in one language."""

    leads: tuple[str, ...]  # the opening sentence (every passage starts with one)
    beats: tuple[tuple[str, ...], ...]  # further sentences, each with alternative wordings
    questions: dict[str, tuple[str, ...]]  # answer slot -> question wordings
    summaries: tuple[str, ...]
    title: str


# ----------------------------------------------------------------------------------------------
# Lexicons. Names and towns are invented or common; the facts about them are all made up.

_PEOPLE = {
    "en": ["Maria Lopez", "James Carter", "Aisha Khan", "Daniel Brooks", "Helen Ward", "Samuel Okafor",
           "Laura Bennett", "Peter Novak", "Grace Liu", "Thomas Reid", "Nina Patel", "Oliver Grant",
           "Sophie Turner", "Marcus Hill", "Emily Stone", "Robert Hayes", "Clara Jensen", "David Moreno",
           "Hannah Price", "Victor Adams"],
    # (name, gender): Arabic verbs and titles agree with the speaker.
    "ar": [("أحمد الخطيب", "m"), ("سارة المنصوري", "f"), ("محمد العلي", "m"), ("ليلى حداد", "f"),
           ("خالد الزعبي", "m"), ("هدى الشامي", "f"), ("يوسف القاسم", "m"), ("مريم العبدالله", "f"),
           ("عمر السعدي", "m"), ("نور الهاشمي", "f"), ("سامي البدري", "m"), ("رنا الخوري", "f"),
           ("طارق النجار", "m"), ("فاطمة الزهراني", "f"), ("كريم بن علي", "m"), ("دينا فرحات", "f"),
           ("حسن المصري", "m"), ("ريم العتيبي", "f"), ("وليد الصباغ", "m"), ("سلمى التونسي", "f")],
    "zh": ["王丽", "李明", "张伟", "刘洋", "陈静", "杨帆", "赵磊", "黄敏", "周杰", "吴婷", "徐强", "孙悦",
           "马超", "朱琳", "胡斌", "郭芳", "林涛", "何雪", "高远", "罗娜"],
}
_CITIES = {
    "en": ["Riverton", "Millbrook", "Ashford", "Lakeside", "Bramley", "Westport", "Kingsbridge", "Fairhaven",
           "Oakridge", "Eastwick", "Stonehaven", "Redcliff", "Maplewood", "Elmstead", "Brookfield", "Northgate",
           "Clearwater", "Highbury", "Thornton", "Glenmore"],
    "ar": ["الزرقاء", "إربد", "طنطا", "المنصورة", "صفاقس", "سوسة", "وهران", "قسنطينة", "حمص", "اللاذقية",
           "الموصل", "البصرة", "صلالة", "نزوى", "أغادير", "مراكش", "بنغازي", "نابلس", "العقبة", "أبها"],
    "zh": ["苏州", "杭州", "成都", "昆明", "厦门", "青岛", "大连", "洛阳", "桂林", "兰州", "长沙", "南昌",
           "合肥", "贵阳", "烟台", "绍兴", "温州", "扬州", "珠海", "泉州"],
}
_ORGS = {
    "en": ["Regional Health Board", "Northern Development Agency", "Public Works Department", "Civic Trust",
           "Community Building Fund", "Municipal Council", "Ministry of Public Services", "Heritage Foundation"],
    # All feminine nouns (وزارة، هيئة، مؤسسة، جمعية), so a feminine verb always agrees.
    "ar": ["وزارة الخدمات العامة", "هيئة التنمية المحلية", "مؤسسة النور الخيرية", "جمعية الأمل الأهلية",
           "هيئة الأشغال العامة", "مؤسسة الرواد للتنمية", "وزارة الشؤون البلدية", "مؤسسة الغد"],
    "zh": ["市城建局", "省发展基金会", "市公共服务中心", "城市建设投资集团", "市民政局", "区政府",
           "地方教育基金会", "市文化旅游局"],
}
_FACILITIES = {
    "en": [
        {"fac": "hospital", "role": "hospital director", "cap": "has {capacity} beds",
         "cap_q": "How many beds does the new hospital have?"},
        {"fac": "library", "role": "head librarian", "cap": "has seats for {capacity} readers",
         "cap_q": "How many readers can the new library seat?"},
        {"fac": "museum", "role": "museum director", "cap": "can welcome {capacity} visitors a day",
         "cap_q": "How many visitors a day can the new museum welcome?"},
        {"fac": "school", "role": "head teacher", "cap": "has places for {capacity} pupils",
         "cap_q": "How many pupils can the new school take?"},
        {"fac": "sports hall", "role": "sports hall manager", "cap": "has {capacity} seats",
         "cap_q": "How many seats does the new sports hall have?"},
    ],
    "ar": [
        {"fac_new": "مستشفى جديد", "fac_def_new": "المستشفى الجديد", "role": ("مدير المستشفى", "مديرة المستشفى"),
         "cap": "ويضم المستشفى {capacity} سرير", "cap_q": "كم سريرًا يضم المستشفى الجديد؟"},
        {"fac_new": "مكتبة عامة جديدة", "fac_def_new": "المكتبة الجديدة", "role": ("مدير المكتبة", "مديرة المكتبة"),
         "cap": "وتتسع المكتبة لـ{capacity} قارئ", "cap_q": "كم قارئًا تتسع له المكتبة الجديدة؟"},
        {"fac_new": "متحف جديد", "fac_def_new": "المتحف الجديد", "role": ("مدير المتحف", "مديرة المتحف"),
         "cap": "ويستقبل المتحف {capacity} زائر يوميًا", "cap_q": "كم زائرًا يستقبل المتحف الجديد يوميًا؟"},
        {"fac_new": "مدرسة جديدة", "fac_def_new": "المدرسة الجديدة", "role": ("مدير المدرسة", "مديرة المدرسة"),
         "cap": "وتتسع المدرسة لـ{capacity} طالب", "cap_q": "كم طالبًا تتسع له المدرسة الجديدة؟"},
        {"fac_new": "صالة رياضية جديدة", "fac_def_new": "الصالة الرياضية الجديدة",
         "role": ("مدير الصالة", "مديرة الصالة"),
         "cap": "وتضم الصالة {capacity} مقعد", "cap_q": "كم مقعدًا تضم الصالة الرياضية الجديدة؟"},
    ],
    "zh": [
        {"fac": "医院", "fac_new": "一家新医院", "role": "院长", "cap": "设有{capacity}张床位",
         "cap_q": "新医院设有多少张床位？"},
        {"fac": "图书馆", "fac_new": "一座新图书馆", "role": "馆长", "cap": "可同时容纳{capacity}名读者",
         "cap_q": "新图书馆可同时容纳多少名读者？"},
        {"fac": "博物馆", "fac_new": "一座新博物馆", "role": "馆长", "cap": "每天可接待{capacity}名游客",
         "cap_q": "新博物馆每天可接待多少名游客？"},
        {"fac": "学校", "fac_new": "一所新学校", "role": "校长", "cap": "可容纳{capacity}名学生",
         "cap_q": "新学校可容纳多少名学生？"},
        {"fac": "体育馆", "fac_new": "一座新体育馆", "role": "场馆经理", "cap": "设有{capacity}个座位",
         "cap_q": "新体育馆设有多少个座位？"},
    ],
}
_TEAMS = {
    "en": ["Red Foxes", "Blue Herons", "Iron Wolves", "Golden Eagles", "Northern Stars", "River Sharks",
           "Stone Lions", "Silver Falcons"],
    "ar": ["النسور", "الفرسان", "الصقور", "النجوم", "الأسود", "الشهب", "الرعد", "الأمواج"],
    "zh": ["红狐队", "蓝鹭队", "铁狼队", "金鹰队", "北星队", "江鲨队", "石狮队", "银隼队"],
}
_CUPS = {
    "en": ["Regional Cup", "Coastal League title", "National Cup", "Spring Championship", "Heritage Trophy"],
    "ar": ["كأس المنطقة", "لقب الدوري الساحلي", "الكأس الوطنية", "بطولة الربيع", "كأس التراث"],
    "zh": ["地区杯", "沿海联赛冠军", "全国杯", "春季锦标赛", "传统杯"],
}
_COMPANIES = {
    "en": ["Northwind Foods", "Brightline Motors", "Cobalt Systems", "Harbor Textiles", "Summit Pharma",
           "Bluewater Energy", "Evergreen Paper", "Lumen Electronics"],
    "ar": ["شركة النخيل للأغذية", "شركة الأفق للسيارات", "شركة الكوبالت للأنظمة", "شركة المرفأ للنسيج",
           "شركة القمة للأدوية", "شركة المياه الزرقاء للطاقة", "شركة الواحة للورق", "شركة لمعان للإلكترونيات"],
    "zh": ["北风食品公司", "明线汽车公司", "钴蓝系统公司", "海港纺织公司", "峰顶制药公司", "蓝水能源公司",
           "常青纸业公司", "流明电子公司"],
}
_PLANTS = {
    "en": ["factory", "distribution centre", "research centre", "data centre", "solar panel plant"],
    # Masculine nouns in the genitive, so "سيوفر" agrees and no case ending is needed.
    "ar": ["مصنع جديد", "مركز توزيع جديد", "مركز أبحاث جديد", "مركز بيانات جديد", "مصنع جديد للألواح الشمسية"],
    "zh": ["工厂", "物流中心", "研发中心", "数据中心", "太阳能电池板工厂"],
}
_FESTIVALS = {
    "en": ["film festival", "book fair", "music festival", "food festival", "theatre festival"],
    "ar": [("مهرجان السينما", "المهرجان"), ("معرض الكتاب", "المعرض"), ("مهرجان الموسيقى", "المهرجان"),
           ("مهرجان الطعام", "المهرجان"), ("مهرجان المسرح", "المهرجان")],
    "zh": ["电影节", "书展", "音乐节", "美食节", "戏剧节"],
}
_AGENCIES = {
    "en": ["National Weather Office", "Civil Protection Agency", "Regional Emergency Service", "Meteorological Centre"],
    "ar": ["هيئة الأرصاد الجوية", "المديرية العامة للدفاع المدني", "المركز الوطني للأرصاد", "هيئة الطوارئ الإقليمية"],
    "zh": ["国家气象中心", "市气象台", "区域应急服务中心", "省防灾中心"],
}
_LINES = {
    "en": ["railway line", "tram line", "express bus line", "metro line"],
    "ar": ["خط قطار", "خط ترام", "خط حافلات سريعة", "خط مترو"],
    "zh": ["铁路线", "有轨电车线", "快速公交线", "地铁线"],
}
_OPERATORS = {
    "en": ["Metro Rail Company", "Regional Transport Authority", "Coastal Rail Group", "City Transit Service"],
    # Feminine (شركة، هيئة، مجموعة) to agree with "تتولى".
    "ar": ["شركة السكك الحديدية الوطنية", "هيئة النقل الإقليمية", "مجموعة القطارات الساحلية", "شركة النقل الحضري"],
    "zh": ["城市轨道公司", "区域交通管理局", "沿海铁路集团", "城市公交公司"],
}

_EN_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
              "October", "November", "December"]
_AR_MONTHS = ["يناير", "فبراير", "مارس", "أبريل", "مايو", "يونيو", "يوليو", "أغسطس", "سبتمبر", "أكتوبر",
              "نوفمبر", "ديسمبر"]
_EN_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}
_ZH_WORDS = {2: "两", 3: "三", 4: "四", 5: "五", 6: "六", 7: "七", 8: "八", 9: "九"}
# Arabic: 3-10 take the opposite gender of the (masculine) counted noun; 2 is the dual.
_AR_YEARS = {2: "عامين", 3: "ثلاثة أعوام", 4: "أربعة أعوام", 5: "خمسة أعوام"}
_AR_DAYS = {3: "ثلاثة أيام", 4: "أربعة أيام", 5: "خمسة أيام", 6: "ستة أيام", 7: "سبعة أيام",
            8: "ثمانية أيام", 9: "تسعة أيام"}
_AR_GOALS = {2: "هدفين", 3: "ثلاثة أهداف", 4: "أربعة أهداف"}
# Arabic verbs and nouns that agree with a person's gender: (masculine, feminine).
_AR_GENDERED = {
    "said": ("قال", "قالت"), "confirmed": ("أكد", "أكدت"), "explained": ("أوضح", "أوضحت"),
    "urged": ("دعا", "دعت"), "scored": ("سجل", "سجلت"), "chosen": ("اختير", "اختيرت"),
    "was": ("كان", "كانت"), "star": ("نجم", "نجمة"), "expected": ("توقع", "توقعت"),
    "ceo_title": ("الرئيس التنفيذي", "الرئيسة التنفيذية"), "spokes_title": ("المتحدث", "المتحدثة"),
    "minister_title": ("وزير النقل", "وزيرة النقل"), "coach_title": ("المدرب", "المدربة"),
    "director": ("مدير", "مديرة"),
}

# ----------------------------------------------------------------------------------------------
# Events, written natively per language. Placeholders are slots (see _slots).

_EVENTS: dict[str, dict[str, Event]] = {
    "en": {
        "opening": Event(
            leads=("The {org} opened a new {fac} in {city} on {date}.",
                   "A new {fac} opened its doors in {city} on {date}, the {org} announced.",
                   "On {date}, the {org} officially opened a new {fac} in {city}."),
            beats=(("The {fac} {cap} and cost {cost} to build.",
                    "Built at a cost of {cost}, the {fac} {cap}."),
                   ("{person}, the {role}, said it would serve about {served} people in the area.",
                    "\"This is a big day for the whole region,\" said {person}, the {role}, adding that "
                    "about {served} people would benefit."),
                   ("Construction took {years}, and residents had asked for the project for a long time.",
                    "Work on the site lasted {years} and was delayed twice by bad weather."),
                   ("Opening hours will be longer during the summer months.",
                    "Several local groups have already booked visits for the coming weeks.")),
            questions={
                "city": ("Where did the new {fac} open?", "In which town is the new {fac} located?"),
                "date": ("When did the new {fac} open?", "On what date did the {fac} in {city} open?"),
                "person": ("Who is the {role}?", "Which official said the {fac} would help about {served} people?"),
                "cost": ("How much did the new {fac} cost?", "What was the cost of building the {fac}?"),
                "capacity": ("{cap_q}",),
                "years": ("How long did the construction work take?", "How long did work on the site last?"),
                "served": ("How many people will the new {fac} serve?",
                           "About how many people are expected to benefit from the {fac}?"),
                "org": ("Which organisation opened the new {fac}?",
                        "Which body announced the opening of the {fac} in {city}?"),
            },
            summaries=("The {org} has opened a new {fac} in {city} that {cap} and cost {cost}.",
                       "A new {fac} costing {cost} opened in {city} on {date}."),
            title="New {fac} opens in {city}",
        ),
        "match": Event(
            leads=("The {team} beat the {rival} {score} on {date} to win the {cup}.",
                   "On {date}, the {team} won the {cup} with a {score} victory over the {rival}."),
            beats=(("{person} scored {goals} and was named player of the match.",
                    "The star of the game was {person}, who scored {goals}."),
                   ("About {crowd} fans watched the final at the main stadium in {city}.",
                    "The final in {city} drew a crowd of about {crowd}."),
                   ("Coach {person2} said the players had worked hard all season.",
                    "\"We believed in ourselves from the first minute,\" said coach {person2}."),
                   ("It is the club's first title in {years}.", "The club had waited {years} for a trophy."),
                   ("Fans celebrated in the streets until late at night.",
                    "The two teams will meet again in the autumn.")),
            questions={
                "person": ("Who scored {goals} in the final?", "Which player scored {goals} for the {team}?"),
                "rival": ("Which team did the {team} beat in the final?", "Who did the {team} play against on {date}?"),
                "team": ("Which team won the {cup}?",),
                "score": ("What was the final score?", "By what score did the {team} win?"),
                "crowd": ("How many fans watched the final?", "How large was the crowd at the final?"),
                "city": ("In which town was the final played?", "Where was the final held?"),
                "person2": ("Who is the coach of the {team}?", "Which coach spoke about the team's season?"),
                "date": ("When was the final played?", "On what date did the {team} win the {cup}?"),
                "goals": ("How many goals did {person} score?",),
                "years": ("How long had the club waited for a title?",),
            },
            summaries=("The {team} won the {cup} after beating the {rival} {score}, with {person} scoring {goals}.",
                       "A {score} win over the {rival} gave the {team} the {cup} on {date}."),
            title="{team} win the {cup}",
        ),
        "company": Event(
            leads=("{company} said on {date} that it will build a new {plant} in {city}.",
                   "{company} plans to open a {plant} in {city}, the firm announced on {date}."),
            beats=(("The project is expected to create {jobs} jobs and will cost {cost}.",
                    "The investment of {cost} should bring about {jobs} new jobs to the area."),
                   ("Chief executive {person} said the town was chosen for its good road and rail links.",
                    "{person}, the company's chief executive, said the region had many skilled workers."),
                   ("Production is due to start in {start_year}.",
                    "The site should be fully running by {start_year}."),
                   ("Local officials welcomed the news.",
                    "Some residents have raised concerns about extra traffic.")),
            questions={
                "city": ("Where will {company} build its new {plant}?", "In which town is the new {plant} planned?"),
                "date": ("When did {company} announce the plan?",),
                "jobs": ("How many jobs will the project create?", "How many new jobs are expected?"),
                "cost": ("How much will the new {plant} cost?", "What is the value of the investment?"),
                "person": ("Who is the chief executive of {company}?",),
                "start_year": ("In which year should the new {plant} start working?",),
                "company": ("Which company plans a new {plant} in {city}?",),
            },
            summaries=("{company} will build a {plant} in {city}, creating {jobs} jobs.",
                       "{company} is investing {cost} in a new {plant} in {city}."),
            title="{company} to build {plant} in {city}",
        ),
        "festival": Event(
            leads=("The annual {festival} opened in {city} on {date}.",
                   "{city} celebrated the opening of its annual {festival} on {date}.",
                   "On {date}, the annual {festival} got under way in {city}."),
            beats=(("Organisers expect about {visitors} visitors this year.",
                    "Around {visitors} people are expected to attend."),
                   ("Artists from {countries} countries are taking part.",
                    "Guests from {countries} countries have been invited."),
                   ("{person}, the festival director, said ticket sales were higher than last year.",
                    "Festival director {person} said the programme was the largest so far."),
                   ("The event will last {days}, and most shows take place in the evening.",
                    "The programme runs for {days} and many events are free."),
                   ("Hotels in the city centre report that most rooms are booked.",
                    "Extra buses will run at night while the festival lasts.")),
            questions={
                "city": ("Where is the {festival} being held?", "Which town hosts the annual {festival}?"),
                "date": ("When did the {festival} open?",),
                "visitors": ("How many visitors are expected at the {festival}?",),
                "countries": ("How many countries are taking part in the {festival}?",),
                "person": ("Who is the director of the {festival}?",),
                "days": ("How long will the {festival} last?",),
            },
            summaries=("The annual {festival} opened in {city}, with about {visitors} visitors expected.",
                       "The annual {festival} in {city} began on {date} and will run for {days}."),
            title="{festival} opens in {city}",
        ),
        "storm": Event(
            leads=("Heavy rain hit {city} on {date}, flooding many streets.",
                   "A powerful storm swept through {city} on {date}.",
                   "On {date}, {city} was hit by the heaviest rain of the year."),
            beats=(("The {agency} said {rain} of rain fell in a single day.",
                    "According to the {agency}, {rain} of rain were recorded."),
                   ("About {homes} homes lost power for several hours.",
                    "Power cuts affected around {homes} homes."),
                   ("{person}, a spokesperson for the emergency services, urged residents to stay at home.",
                    "\"Please avoid the roads near the river,\" said {person}, who speaks for the emergency services."),
                   ("Schools in the area were closed as a precaution.",
                    "Emergency teams worked through the night to clear fallen trees.")),
            questions={
                "city": ("Which town was hit by the bad weather?", "Where did the bad weather strike?"),
                "date": ("When did the bad weather hit {city}?",),
                "rain": ("How much rain fell?", "How much rain was recorded?"),
                "homes": ("How many homes lost power?",),
                "person": ("Who spoke for the emergency services?",),
                "agency": ("Which agency measured the rainfall?",),
            },
            summaries=("Heavy rain brought {rain} of rain to {city} and cut power to about {homes} homes.",
                       "Bad weather on {date} left about {homes} homes in {city} without power."),
            title="Heavy rain floods streets in {city}",
        ),
        "transport": Event(
            leads=("A new {line} between {city} and {city2} opened on {date}.",
                   "On {date}, a new {line} linking {city} with {city2} carried its first passengers."),
            beats=(("The line is {length_km} long and has {stations} stations.",
                    "It runs for {length_km} and stops at {stations} stations."),
                   ("The journey now takes {minutes}, much less than before.",
                    "Travel time between the two towns has fallen to {minutes}."),
                   ("Transport minister {person} said the line would carry about {passengers} passengers a day.",
                    "{person}, the transport minister, expects about {passengers} passengers a day."),
                   ("The service is run by the {operator}.", "The {operator} will operate the line."),
                   ("Tickets are half price during the first month.",
                    "Bicycles are allowed outside peak hours.")),
            questions={
                "city2": ("Which town is linked to {city} by the new {line}?",),
                "date": ("When did the new {line} open?",),
                "length_km": ("How long is the new {line}?",),
                "stations": ("How many stations does the line have?",),
                "minutes": ("How long does the journey take now?",),
                "passengers": ("How many passengers a day is the line expected to carry?",),
                "person": ("Who is the transport minister?",),
                "operator": ("Who runs the new {line}?",),
            },
            summaries=("A new {line} linking {city} and {city2} opened on {date}, cutting the journey to {minutes}.",
                       "{city} and {city2} are now connected by a new {line} with {stations} stations."),
            title="New {line} links {city} and {city2}",
        ),
    },
    "ar": {
        "opening": Event(
            leads=("أعلنت {org} يوم {date} افتتاح {fac_new} في مدينة {city}.",
                   "شهدت مدينة {city} يوم {date} افتتاح {fac_new} بتمويل من {org}."),
            beats=(("{cap}، فيما بلغت تكلفة المشروع {cost}.",
                    "وبلغت تكلفة المشروع {cost}. {cap}."),
                   ("و{v_said} {person}، {role}، إن المشروع سيخدم نحو {served} نسمة في المنطقة.",
                    "و{v_confirmed} {person}، {role}، أن نحو {served} نسمة سيستفيدون من المشروع."),
                   ("واستغرقت أعمال البناء {years}، بعد مطالبات طويلة من سكان المنطقة.",
                    "واستمرت الأعمال في الموقع {years}، وتأخرت مرتين بسبب سوء الأحوال الجوية."),
                   ("ومن المقرر تمديد ساعات العمل خلال أشهر الصيف.",
                    "وحجزت عدة مجموعات محلية زيارات خلال الأسابيع المقبلة.")),
            questions={
                "city": ("ما المدينة التي شهدت افتتاح {fac_new}؟", "في أي مدينة يقع المشروع الجديد؟"),
                "date": ("متى جرى افتتاح {fac_def_new}؟", "في أي يوم تم افتتاح {fac_new} في {city}؟"),
                "person": ("ما اسم {role}؟", "من تحدث عن عدد السكان الذين سيستفيدون من المشروع؟"),
                "cost": ("كم بلغت تكلفة المشروع؟", "ما تكلفة إنشاء {fac_def_new}؟"),
                "capacity": ("{cap_q}",),
                "years": ("ما المدة التي استغرقها العمل في المشروع؟",),
                "served": ("كم عدد السكان الذين سيخدمهم المشروع؟", "كم نسمة ستستفيد من المشروع؟"),
                "org": ("ما الجهة المسؤولة عن المشروع؟", "ما الجهة التي تقف وراء افتتاح {fac_def_new}؟"),
            },
            summaries=("أعلنت {org} افتتاح {fac_new} في مدينة {city} بتكلفة {cost}.",
                       "جرى افتتاح {fac_new} في مدينة {city} لخدمة نحو {served} نسمة."),
            title="افتتاح {fac_new} في {city}",
        ),
        "match": Event(
            leads=("فاز فريق {team} على فريق {rival} بنتيجة {score} يوم {date} ليحرز {cup}.",
                   "أحرز فريق {team} {cup} يوم {date} بعد فوزه على فريق {rival} بنتيجة {score}."),
            beats=(("و{v_scored} {person} {goals} و{v_chosen} أفضل لاعب في المباراة.",
                    "و{v_was} {person} {star} المباراة بعدما {v_scored} {goals}."),
                   ("وتابع المباراة النهائية في مدينة {city} نحو {crowd} مشجع.",
                    "وحضر نحو {crowd} مشجع المباراة على الملعب الرئيسي في {city}."),
                   ("و{v2_said} {coach_title2} {person2} إن اللاعبين عملوا بجد طوال الموسم.",
                    "و{v2_confirmed} {coach_title2} {person2} أن الفريق آمن بقدرته على الفوز منذ الدقيقة الأولى."),
                   ("وهو أول لقب للنادي منذ {years}.", "وكان النادي ينتظر هذا اللقب منذ {years}."),
                   ("واحتفل المشجعون في الشوارع حتى ساعة متأخرة من الليل.",
                    "ويلتقي الفريقان مجددًا في الخريف المقبل.")),
            questions={
                "person": ("من سجل {goals} في المباراة النهائية؟", "من سجل {goals} لفريق {team}؟"),
                "rival": ("على أي فريق فاز فريق {team}؟", "ما الفريق الذي خسر أمام فريق {team}؟"),
                "team": ("ما الفريق الذي أحرز {cup}؟",),
                "score": ("ما النتيجة النهائية للمباراة؟", "بأي نتيجة فاز فريق {team}؟"),
                "crowd": ("كم عدد المشجعين الذين تابعوا المباراة؟", "كم مشجعًا حضر المباراة النهائية؟"),
                "city": ("في أي مدينة أقيمت المباراة النهائية؟", "أين جرت المباراة النهائية؟"),
                "person2": ("ما اسم مدرب فريق {team}؟", "من مدرب الفريق الفائز؟"),
                "date": ("متى أقيمت المباراة النهائية؟", "في أي يوم أحرز فريق {team} {cup}؟"),
                "goals": ("كم هدفًا {v_scored} {person}؟",),
                "years": ("منذ متى ينتظر النادي لقبًا؟",),
            },
            summaries=("أحرز فريق {team} {cup} بعد فوزه على فريق {rival} بنتيجة {score}، و{v_scored} {person} {goals}.",
                       "توّج فريق {team} بطلًا يوم {date} بعد فوزه على فريق {rival} بنتيجة {score}."),
            title="فريق {team} يحرز {cup}",
        ),
        "company": Event(
            leads=("أعلنت {company} يوم {date} عزمها بناء {plant} في مدينة {city}.",
                   "تعتزم {company} إنشاء {plant} في مدينة {city}، بحسب بيان صدر يوم {date}."),
            beats=(("ومن المتوقع أن يوفر المشروع {jobs} وظيفة بتكلفة {cost}.",
                    "وتبلغ قيمة الاستثمار {cost}، ويُنتظر أن يوفر المشروع نحو {jobs} فرصة عمل جديدة."),
                   ("و{v_said} {ceo_title} للشركة {person} إن الموقع اختير لقربه من الطرق وخطوط السكك الحديدية.",
                    "و{v_explained} {person}، {ceo_title} للشركة، أن المنطقة تتمتع بأيد عاملة ماهرة."),
                   ("ومن المقرر أن يبدأ الإنتاج عام {start_year}.",
                    "ويُتوقع أن يعمل الموقع بكامل طاقته بحلول عام {start_year}."),
                   ("ورحب مسؤولون محليون بهذا الإعلان.",
                    "وأبدى بعض السكان قلقهم من زيادة حركة المرور.")),
            questions={
                "city": ("في أي مدينة ستبني {company} موقعها الجديد؟", "أين يقع المشروع الجديد لـ{company}؟"),
                "date": ("متى أعلنت {company} عن المشروع؟",),
                "jobs": ("كم وظيفة سيوفر المشروع؟", "كم فرصة عمل يُنتظر أن يوفرها المشروع؟"),
                "cost": ("كم تبلغ تكلفة المشروع؟",),
                "person": ("من يتولى منصب الرئيس التنفيذي لـ{company}؟",),
                "start_year": ("متى يُتوقع أن يبدأ العمل في الموقع الجديد؟",),
                "company": ("ما الشركة التي تعتزم إنشاء {plant} في {city}؟",),
            },
            summaries=("تعتزم {company} بناء {plant} في مدينة {city} سيوفر {jobs} وظيفة.",
                       "أعلنت {company} استثمار {cost} في {plant} بمدينة {city}."),
            title="{company} تبني {plant} في {city}",
        ),
        "festival": Event(
            leads=("انطلق {festival} السنوي في مدينة {city} يوم {date}.",
                   "افتتحت مدينة {city} يوم {date} فعاليات {festival} السنوي."),
            beats=(("ويتوقع المنظمون حضور نحو {visitors} زائر هذا العام.",
                    "ويُنتظر أن يزور الفعاليات نحو {visitors} شخص."),
                   ("ويشارك فيه فنانون من {countries} دولة.",
                    "ووُجهت الدعوة إلى ضيوف من {countries} دولة."),
                   ("و{v_said} {person}، {director_title}، إن مبيعات التذاكر فاقت مبيعات العام الماضي.",
                    "و{v_confirmed} {director_title} {person} أن برنامج هذا العام هو الأكبر حتى الآن."),
                   ("وتستمر الفعاليات {days}، وتقام معظم العروض في المساء.",
                    "ويمتد البرنامج {days}، والدخول إلى كثير من الفعاليات مجاني."),
                   ("وأفادت فنادق وسط المدينة بأن معظم غرفها محجوزة.",
                    "وتعمل حافلات إضافية ليلًا طوال أيام الفعاليات.")),
            questions={
                "city": ("أين يقام {festival} السنوي؟", "ما المدينة التي تستضيف {festival}؟"),
                "date": ("متى انطلق {festival}؟",),
                "visitors": ("كم زائرًا يتوقع المنظمون؟",),
                "countries": ("من كم دولة يأتي المشاركون؟",),
                "person": ("ما اسم {director_title}؟",),
                "days": ("كم تستمر فعاليات {festival}؟",),
            },
            summaries=("انطلق {festival} السنوي في مدينة {city} بمشاركة ضيوف من {countries} دولة.",
                       "يستقبل {festival} في {city} نحو {visitors} زائر على مدى {days}."),
            title="انطلاق {festival} في {city}",
        ),
        "storm": Event(
            leads=("ضربت أمطار غزيرة مدينة {city} يوم {date} وأغرقت عددًا من الشوارع.",
                   "اجتاحت عاصفة قوية مدينة {city} يوم {date}.",
                   "شهدت مدينة {city} يوم {date} أغزر أمطار هذا العام."),
            beats=(("وبحسب {agency}، بلغت كمية الأمطار {rain} خلال يوم واحد.",
                    "وسجلت محطات {agency} هطول {rain} من الأمطار."),
                   ("وانقطعت الكهرباء عن نحو {homes} منزل لعدة ساعات.",
                    "وطالت الانقطاعات الكهربائية قرابة {homes} منزل."),
                   ("و{v_urged} {person}، {spokes_title} باسم فرق الطوارئ، السكان إلى البقاء في منازلهم.",
                    "و{v_said} {person}، {spokes_title} باسم فرق الطوارئ: «يرجى تجنب الطرق القريبة من النهر»."),
                   ("وأُغلقت المدارس في المنطقة كإجراء احترازي.",
                    "وعملت فرق الإنقاذ طوال الليل على إزالة الأشجار المتساقطة.")),
            questions={
                "city": ("ما المدينة التي ضربها الطقس السيئ؟",),
                "date": ("متى ضرب الطقس السيئ مدينة {city}؟",),
                "rain": ("كم بلغت كمية الأمطار؟", "ما كمية الأمطار التي سُجلت؟"),
                "homes": ("كم منزلًا انقطعت عنه الكهرباء؟",),
                "person": ("من تحدث باسم فرق الطوارئ؟",),
                "agency": ("ما الجهة التي سجلت كمية الأمطار؟",),
            },
            summaries=("هطلت أمطار غزيرة بلغت {rain} على مدينة {city}، وانقطعت الكهرباء عن نحو {homes} منزل.",
                       "تسبب الطقس السيئ يوم {date} في انقطاع الكهرباء عن نحو {homes} منزل في مدينة {city}."),
            title="أمطار غزيرة تغرق شوارع {city}",
        ),
        "transport": Event(
            leads=("افتُتح يوم {date} {line} جديد يربط بين مدينتي {city} و{city2}.",
                   "استقبل {line} جديد بين {city} و{city2} أول ركابه يوم {date}."),
            beats=(("ويبلغ طول الخط {length_km}، ويضم {stations} محطة.",
                    "ويمتد الخط مسافة {length_km} ويتوقف في {stations} محطة."),
                   ("وباتت الرحلة تستغرق {minutes} فقط.",
                    "وتقلص زمن الرحلة بين المدينتين إلى {minutes}."),
                   ("و{v_said} {minister_title} {person} إن الخط سينقل نحو {passengers} راكب يوميًا.",
                    "و{v_expected} {person}، {minister_title}، أن يستخدم الخط نحو {passengers} راكب يوميًا."),
                   ("وتتولى {operator} تشغيل الخط.", "ويُدار الخط من قبل {operator}."),
                   ("وتُباع التذاكر بنصف السعر خلال الشهر الأول.",
                    "ويُسمح بنقل الدراجات خارج ساعات الذروة.")),
            questions={
                "city2": ("ما المدينة التي يربطها الخط الجديد بمدينة {city}؟",),
                "date": ("متى افتُتح الخط الجديد؟",),
                "length_km": ("كم يبلغ طول الخط الجديد؟",),
                "stations": ("كم محطة يضم الخط؟",),
                "minutes": ("كم تستغرق الرحلة الآن؟",),
                "passengers": ("كم راكبًا يُتوقع أن ينقل الخط يوميًا؟",),
                "person": ("ما اسم {minister_title}؟",),
                "operator": ("ما الجهة التي تشغّل الخط؟",),
            },
            summaries=("افتُتح {line} جديد يربط بين {city} و{city2}، واختُصرت مدة الرحلة إلى {minutes}.",
                       "بات {line} جديد يضم {stations} محطة يربط بين مدينتي {city} و{city2}."),
            title="{line} جديد يربط {city} و{city2}",
        ),
    },
    "zh": {
        "opening": Event(
            leads=("{date}，{org}在{city}正式启用{fac_new}。",
                   "{city}新建的{fac}于{date}正式开放，该项目由{org}负责建设。"),
            beats=(("该{fac}{cap}，总投资{cost}。", "项目总投资{cost}，建成后{cap}。"),
                   ("{role}{person}表示，新{fac}将为周边约{served}居民提供服务。",
                    "{role}{person}说：“这是全市的一件大事。”据介绍，约{served}居民将因此受益。"),
                   ("工程历时{years}，当地居民对此期待已久。", "整个工程历时{years}，其间曾两次因天气原因停工。"),
                   ("夏季期间开放时间将会延长。", "已有多家本地团体预约了近期的参观活动。")),
            questions={
                "city": ("新建的{fac}位于哪座城市？", "{org}在哪里建成了新{fac}？"),
                "date": ("新{fac}是哪天开放的？", "{city}的新{fac}于何时启用？"),
                "person": ("新{fac}的{role}叫什么名字？", "谁表示新{fac}将惠及当地居民？"),
                "cost": ("新{fac}的总投资是多少？",),
                "capacity": ("{cap_q}",),
                "years": ("这项工程历时多久？",),
                "served": ("新{fac}将服务多少居民？",),
                "org": ("哪个机构负责这个项目？",),
            },
            summaries=("{org}在{city}启用{fac_new}，总投资{cost}。",
                       "{city}新建的{fac}于{date}开放，预计服务约{served}居民。"),
            title="{city}新{fac}正式开放",
        ),
        "match": Event(
            leads=("{date}，{team}以{score}战胜{rival}，夺得{cup}。",
                   "{team}在{date}举行的决赛中以{score}击败{rival}，赢得{cup}。"),
            beats=(("{person}在比赛中打进{goals}，当选全场最佳球员。", "本场比赛的最大功臣是打进{goals}的{person}。"),
                   ("约{crowd}名球迷在{city}的主体育场观看了这场决赛。", "这场在{city}进行的决赛吸引了约{crowd}名观众。"),
                   ("主教练{person2}表示，球员们整个赛季都非常努力。", "主教练{person2}说：“我们从第一分钟起就相信自己。”"),
                   ("这是该队{years}来首次夺冠。", "球队已经等待这个冠军{years}了。"),
                   ("球迷们在街头庆祝到深夜。", "两队将于今年秋天再次交手。")),
            questions={
                "person": ("谁在决赛中打进{goals}？", "哪位球员为{team}打进{goals}？"),
                "rival": ("{team}在决赛中击败了哪支球队？",),
                "team": ("哪支球队夺得了{cup}？",),
                "score": ("决赛的比分是多少？", "{team}以什么比分获胜？"),
                "crowd": ("有多少名球迷观看了决赛？",),
                "city": ("决赛在哪座城市举行？",),
                "person2": ("{team}的主教练是谁？",),
                "date": ("决赛是在哪天进行的？",),
                "goals": ("{person}打进了几球？",),
                "years": ("该队多久没有夺冠了？",),
            },
            summaries=("{team}以{score}战胜{rival}夺得{cup}，{person}打进{goals}。",
                       "{date}，{team}击败{rival}，赢得{cup}。"),
            title="{team}夺得{cup}",
        ),
        "company": Event(
            leads=("{company}于{date}宣布，将在{city}新建一座{plant}。",
                   "{company}计划在{city}建设新的{plant}，该公司于{date}对外公布了这一消息。"),
            beats=(("该项目预计将创造{jobs}个就业岗位，总投资{cost}。", "这笔{cost}的投资有望为当地带来约{jobs}个新岗位。"),
                   ("公司首席执行官{person}表示，选择该地是因为这里交通便利。", "首席执行官{person}说，当地拥有大量熟练工人。"),
                   ("新{plant}计划于{start_year}年投产。", "预计到{start_year}年，该基地将全面投入运营。"),
                   ("当地官员对这一消息表示欢迎。", "也有部分居民担心交通会因此变得拥堵。")),
            questions={
                "city": ("{company}将在哪座城市新建{plant}？",),
                "date": ("{company}是哪天公布这一计划的？",),
                "jobs": ("该项目预计创造多少个就业岗位？",),
                "cost": ("该项目的投资额是多少？",),
                "person": ("{company}的首席执行官是谁？",),
                "start_year": ("新基地预计哪一年投入使用？",),
                "company": ("哪家公司计划在{city}新建{plant}？",),
            },
            summaries=("{company}将在{city}新建{plant}，预计创造{jobs}个就业岗位。",
                       "{company}宣布投资{cost}在{city}建设{plant}。"),
            title="{company}将在{city}建设{plant}",
        ),
        "festival": Event(
            leads=("一年一度的{festival}于{date}在{city}开幕。", "{date}，{city}迎来了一年一度的{festival}。"),
            beats=(("主办方预计今年将有约{visitors}名观众到场。", "预计本届活动将吸引约{visitors}人次参加。"),
                   ("来自{countries}个国家的艺术家参加了本届活动。", "主办方邀请了来自{countries}个国家的嘉宾。"),
                   ("活动总监{person}表示，今年的门票销量高于去年。", "总监{person}说，本届节目规模为历届之最。"),
                   ("活动将持续{days}，大部分演出在晚上举行。", "整个活动为期{days}，许多项目免费开放。"),
                   ("市中心的酒店表示，大部分房间已被预订。", "活动期间，夜间将增开公交班次。")),
            questions={
                "city": ("{festival}在哪座城市举行？",),
                "date": ("{festival}是哪天开幕的？",),
                "visitors": ("预计有多少人参加{festival}？",),
                "countries": ("参加活动的嘉宾来自多少个国家？",),
                "person": ("活动总监是谁？",),
                "days": ("{festival}将持续多长时间？",),
            },
            summaries=("一年一度的{festival}在{city}开幕，来自{countries}个国家的嘉宾参加。",
                       "{city}的{festival}于{date}开幕，为期{days}，预计吸引约{visitors}人。"),
            title="{city}{festival}开幕",
        ),
        "storm": Event(
            leads=("{date}，一场暴雨袭击了{city}，多条街道被淹。", "{date}，强风暴席卷{city}。",
                   "{city}于{date}迎来今年以来最强降雨。"),
            beats=(("据{agency}统计，当天降雨量达到{rain}。", "{agency}的数据显示，一天之内降雨达{rain}。"),
                   ("约{homes}户居民家中停电数小时。", "停电影响了约{homes}户家庭。"),
                   ("应急部门发言人{person}提醒市民尽量减少外出。", "应急部门发言人{person}说：“请不要靠近河边的道路。”"),
                   ("出于安全考虑，当地学校临时停课。", "抢险人员连夜清理倒伏的树木。")),
            questions={
                "city": ("哪座城市遭遇了恶劣天气？",),
                "date": ("恶劣天气是哪天袭击{city}的？",),
                "rain": ("当天的降雨量是多少？",),
                "homes": ("有多少户居民停电？",),
                "person": ("应急部门的发言人是谁？",),
                "agency": ("降雨数据来自哪个机构？",),
            },
            summaries=("{city}遭遇暴雨，降雨量达{rain}，约{homes}户居民停电。",
                       "{date}的恶劣天气导致{city}约{homes}户家庭停电。"),
            title="暴雨袭击{city}",
        ),
        "transport": Event(
            leads=("连接{city}和{city2}的新{line}于{date}正式开通。", "{date}，{city}至{city2}的新{line}迎来首批乘客。"),
            beats=(("这条线路全长{length_km}，共设{stations}个车站。", "线路长{length_km}，沿途停靠{stations}个站。"),
                   ("两地之间的行程现在只需{minutes}。", "乘客的通行时间缩短至{minutes}。"),
                   ("交通部长{person}表示，该线路每天将运送约{passengers}名乘客。",
                    "交通部长{person}预计，每天约有{passengers}人次乘坐这条线路。"),
                   ("该线路由{operator}负责运营。", "{operator}将承担这条线路的日常运营。"),
                   ("开通首月车票半价优惠。", "非高峰时段允许携带自行车。")),
            questions={
                "city2": ("新{line}连接{city}和哪座城市？",),
                "date": ("新{line}是哪天开通的？",),
                "length_km": ("新线路全长多少？",),
                "stations": ("这条线路共有多少个车站？",),
                "minutes": ("现在两地之间的行程需要多长时间？",),
                "passengers": ("该线路每天预计运送多少名乘客？",),
                "person": ("交通部长是谁？",),
                "operator": ("这条线路由哪家单位运营？",),
            },
            summaries=("连接{city}和{city2}的新{line}开通，全程只需{minutes}。",
                       "{city}至{city2}的新{line}于{date}开通，共设{stations}个车站。"),
            title="{city}至{city2}新{line}开通",
        ),
    },
}
_EVENT_ORDER = ("opening", "match", "company", "festival", "storm", "transport")

# Slot-free background sentences, placed before each event's closing sentence: they lengthen the
# articles to news size and give QA passages sentences that no question is about.
_BACKGROUND = {
    "en": {
        "opening": ("The project is part of a wider plan to improve public services in the region.",
                    "Residents are invited to a free open day at the weekend."),
        "match": ("The match was broadcast live on regional television.",
                  "Both teams had reached the final without losing a game."),
        "company": ("The firm's shares rose slightly after the announcement.",
                    "The plan still needs final approval from the planning office."),
        "festival": ("This year's programme also includes workshops for children.",
                     "The festival was first held more than twenty years ago."),
        "storm": ("Forecasters warned that more rain could follow later in the week.",
                  "Several roads near the river remained closed the next morning."),
        "transport": ("Building the line took several years and cost more than planned.",
                      "Local businesses hope the line will bring more shoppers to the area."),
    },
    "ar": {
        "opening": ("ويأتي المشروع ضمن خطة أوسع لتحسين الخدمات العامة في المنطقة.",
                    "ودُعي السكان إلى يوم مفتوح مجاني في عطلة نهاية الأسبوع."),
        "match": ("ونُقلت المباراة مباشرة على التلفزيون المحلي.", "ووصل الفريقان إلى النهائي دون أي خسارة."),
        "company": ("وارتفعت أسهم الشركة قليلًا بعد الإعلان.",
                    "ولا يزال المشروع بحاجة إلى موافقة نهائية من الجهات المختصة."),
        "festival": ("ويتضمن برنامج هذا العام ورشًا للأطفال.", "وقد أقيمت الدورة الأولى قبل أكثر من عشرين عامًا."),
        "storm": ("وحذر خبراء الطقس من أمطار إضافية في وقت لاحق من الأسبوع.",
                  "وبقيت عدة طرق قريبة من النهر مغلقة صباح اليوم التالي."),
        "transport": ("واستغرق إنشاء الخط عدة سنوات وتجاوزت تكلفته الميزانية المخططة.",
                      "ويأمل أصحاب المتاجر أن يجلب الخط مزيدًا من الزبائن إلى المنطقة."),
    },
    "zh": {
        "opening": ("该项目是当地改善公共服务整体计划的一部分。", "周末将举办免费开放日，欢迎市民参观。"),
        "match": ("这场比赛由地方电视台进行了现场直播。", "两支球队都以不败战绩闯入决赛。"),
        "company": ("消息公布后，该公司股价小幅上涨。", "该计划仍需获得规划部门的最终批准。"),
        "festival": ("今年的活动还为儿童安排了多场工作坊。", "这一活动已有二十多年的历史。"),
        "storm": ("气象部门提醒，本周晚些时候可能还有降雨。", "第二天早上，河边的几条道路仍未恢复通行。"),
        "transport": ("该线路建设历时数年，实际花费超出预算。", "沿线商户希望新线路能带来更多客流。"),
    },
}
for _lang, _events in _EVENTS.items():
    for _name, _event in _events.items():
        _events[_name] = replace(_event, beats=_event.beats[:-1] + (_BACKGROUND[_lang][_name],) + _event.beats[-1:])

# Slots that carry a fact: a question or summary may only use them when the text states them.
# (Grammar slots such as Arabic verb forms, and the question-only `cap_q`, are exempt.)
_FACT_SLOTS = frozenset({
    "org", "fac", "fac_new", "fac_def_new", "city", "city2", "date", "cost", "cap", "capacity", "person",
    "person2", "role", "served", "years", "team", "rival", "cup", "score", "goals", "crowd", "company",
    "plant", "jobs", "start_year", "festival", "visitors", "countries", "days", "agency", "rain", "homes",
    "line", "length_km", "stations", "minutes", "passengers", "operator", "director_title",
    "minister_title", "coach_title2", "ceo_title", "spokes_title",
})


# ----------------------------------------------------------------------------------------------
# Facts (language independent) and their rendering per language.


def _sample_facts(rng: random.Random) -> dict[str, int]:
    city, city2 = rng.sample(range(20), 2)
    person, person2 = rng.sample(range(20), 2)
    team, rival = rng.sample(range(8), 2)
    won = rng.randrange(2, 5)
    return {
        "city": city, "city2": city2, "person": person, "person2": person2,
        "org": rng.randrange(8), "fac": rng.randrange(5), "company": rng.randrange(8),
        "plant": rng.randrange(5), "festival": rng.randrange(5), "agency": rng.randrange(4),
        "line": rng.randrange(4), "operator": rng.randrange(4), "team": team, "rival": rival,
        "cup": rng.randrange(5), "won": won, "lost": rng.randrange(0, won), "goals": rng.randrange(2, won + 1),
        # Counts are multiples of 100 (Arabic then takes a singular noun; see module doc).
        "capacity": rng.randrange(1, 21) * 100, "crowd": rng.randrange(20, 601) * 100,
        "jobs": rng.randrange(1, 31) * 100, "homes": rng.randrange(5, 201) * 100,
        "served": rng.randrange(2, 51) * 10000, "visitors": rng.randrange(5, 201) * 1000,
        "passengers": rng.randrange(5, 91) * 1000,
        "cost": rng.randrange(5, 96), "years": rng.randrange(2, 6), "start_year": rng.randrange(2026, 2031),
        "countries": rng.randrange(12, 46), "days": rng.randrange(3, 10), "rain": rng.randrange(40, 181),
        "length": rng.randrange(18, 100), "stations": rng.randrange(11, 31), "minutes": rng.randrange(25, 60),
        "day": rng.randrange(1, 29), "month": rng.randrange(12),
    }


def _slots_en(f: dict[str, int]) -> dict[str, str]:
    fac = _FACILITIES["en"][f["fac"]]
    s = {
        "city": _CITIES["en"][f["city"]], "city2": _CITIES["en"][f["city2"]],
        "person": _PEOPLE["en"][f["person"]], "person2": _PEOPLE["en"][f["person2"]],
        "org": _ORGS["en"][f["org"]], "fac": fac["fac"], "role": fac["role"], "cap_q": fac["cap_q"],
        "date": f"{f['day']} {_EN_MONTHS[f['month']]}", "cost": f"{f['cost']} million dollars",
        "capacity": f"{f['capacity']:,}", "served": f"{f['served']:,}", "years": f"{_EN_WORDS[f['years']]} years",
        "team": _TEAMS["en"][f["team"]], "rival": _TEAMS["en"][f["rival"]], "cup": _CUPS["en"][f["cup"]],
        "score": f"{f['won']}-{f['lost']}", "goals": f"{_EN_WORDS[f['goals']]} goals", "crowd": f"{f['crowd']:,}",
        "company": _COMPANIES["en"][f["company"]], "plant": _PLANTS["en"][f["plant"]],
        "jobs": f"{f['jobs']:,}", "start_year": str(f["start_year"]),
        "festival": _FESTIVALS["en"][f["festival"]], "visitors": f"{f['visitors']:,}",
        "countries": str(f["countries"]), "days": f"{_EN_WORDS[f['days']]} days",
        "agency": _AGENCIES["en"][f["agency"]], "rain": f"{f['rain']} millimetres", "homes": f"{f['homes']:,}",
        "line": _LINES["en"][f["line"]], "operator": _OPERATORS["en"][f["operator"]],
        "length_km": f"{f['length']} kilometres", "stations": str(f["stations"]),
        "minutes": f"{f['minutes']} minutes", "passengers": f"{f['passengers']:,}",
    }
    s["cap"] = fac["cap"].format(capacity=s["capacity"])
    return s


def _ar_millions(n: int) -> str:
    # 3-10 take the plural (ملايين); 11 and above the singular (مليون).
    return f"{n} {'ملايين' if 3 <= n <= 10 else 'مليون'} دولار"


def _slots_ar(f: dict[str, int]) -> dict[str, str]:
    fac = _FACILITIES["ar"][f["fac"]]
    name, gender = _PEOPLE["ar"][f["person"]]
    name2, gender2 = _PEOPLE["ar"][f["person2"]]
    g, g2 = (0 if gender == "m" else 1), (0 if gender2 == "m" else 1)
    festival, festival_short = _FESTIVALS["ar"][f["festival"]]
    s = {
        "city": _CITIES["ar"][f["city"]], "city2": _CITIES["ar"][f["city2"]], "person": name, "person2": name2,
        "org": _ORGS["ar"][f["org"]], "fac_new": fac["fac_new"], "fac_def_new": fac["fac_def_new"],
        "role": fac["role"][g], "cap_q": fac["cap_q"],
        "date": f"{f['day']} {_AR_MONTHS[f['month']]}", "cost": _ar_millions(f["cost"]),
        "capacity": str(f["capacity"]), "served": f"{f['served'] // 1000} ألف", "years": _AR_YEARS[f["years"]],
        "team": _TEAMS["ar"][f["team"]], "rival": _TEAMS["ar"][f["rival"]], "cup": _CUPS["ar"][f["cup"]],
        "score": f"{f['won']}-{f['lost']}", "goals": _AR_GOALS[f["goals"]], "crowd": str(f["crowd"]),
        "company": _COMPANIES["ar"][f["company"]], "plant": _PLANTS["ar"][f["plant"]],
        "jobs": str(f["jobs"]), "start_year": str(f["start_year"]),
        "festival": festival, "director_title": f"{_AR_GENDERED['director'][g]} {festival_short}",
        "visitors": f"{f['visitors'] // 1000} ألف", "countries": str(f["countries"]), "days": _AR_DAYS[f["days"]],
        "agency": _AGENCIES["ar"][f["agency"]], "rain": f"{f['rain']} ملم", "homes": str(f["homes"]),
        "line": _LINES["ar"][f["line"]], "operator": _OPERATORS["ar"][f["operator"]],
        "length_km": f"{f['length']} كيلومترا", "stations": str(f["stations"]),
        "minutes": f"{f['minutes']} دقيقة", "passengers": f"{f['passengers'] // 1000} ألف",
        "coach_title2": _AR_GENDERED["coach_title"][g2],
        "v2_said": _AR_GENDERED["said"][g2], "v2_confirmed": _AR_GENDERED["confirmed"][g2],
    }
    for key in ("said", "confirmed", "explained", "urged", "scored", "chosen", "was", "expected"):
        s[f"v_{key}"] = _AR_GENDERED[key][g]
    for key in ("star", "ceo_title", "spokes_title", "minister_title"):
        s[key] = _AR_GENDERED[key][g]
    s["cap"] = fac["cap"].format(capacity=s["capacity"])
    return s


def _slots_zh(f: dict[str, int]) -> dict[str, str]:
    fac = _FACILITIES["zh"][f["fac"]]
    s = {
        "city": _CITIES["zh"][f["city"]], "city2": _CITIES["zh"][f["city2"]],
        "person": _PEOPLE["zh"][f["person"]], "person2": _PEOPLE["zh"][f["person2"]],
        "org": _ORGS["zh"][f["org"]], "fac": fac["fac"], "fac_new": fac["fac_new"], "role": fac["role"],
        "cap_q": fac["cap_q"], "date": f"{f['month'] + 1}月{f['day']}日", "cost": f"{f['cost'] * 100}万元",
        "capacity": str(f["capacity"]), "served": f"{f['served'] // 10000}万", "years": f"{_ZH_WORDS[f['years']]}年",
        "team": _TEAMS["zh"][f["team"]], "rival": _TEAMS["zh"][f["rival"]], "cup": _CUPS["zh"][f["cup"]],
        "score": f"{f['won']}比{f['lost']}", "goals": f"{_ZH_WORDS[f['goals']]}球", "crowd": str(f["crowd"]),
        "company": _COMPANIES["zh"][f["company"]], "plant": _PLANTS["zh"][f["plant"]],
        "jobs": str(f["jobs"]), "start_year": str(f["start_year"]),
        "festival": _FESTIVALS["zh"][f["festival"]], "visitors": str(f["visitors"]),
        "countries": str(f["countries"]), "days": f"{_ZH_WORDS[f['days']]}天",
        "agency": _AGENCIES["zh"][f["agency"]], "rain": f"{f['rain']}毫米", "homes": str(f["homes"]),
        "line": _LINES["zh"][f["line"]], "operator": _OPERATORS["zh"][f["operator"]],
        "length_km": f"{f['length']}公里", "stations": str(f["stations"]),
        "minutes": f"{f['minutes']}分钟", "passengers": str(f["passengers"]),
    }
    s["cap"] = fac["cap"].format(capacity=s["capacity"])
    return s


_SLOT_RENDERERS = {"en": _slots_en, "ar": _slots_ar, "zh": _slots_zh}
_JOINERS = {"en": " ", "ar": " ", "zh": ""}


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _states_facts(template: str, slots: dict[str, str], text: str) -> bool:
    """True when every fact the template mentions is stated in `text` (faithful by construction)."""
    return all(slots[name] in text for name in _fields(template) if name in _FACT_SLOTS)


# ----------------------------------------------------------------------------------------------
# Examples.


def _qa_example(rng: random.Random, lang: str, event: Event) -> dict[str, Any] | None:
    slots = _SLOT_RENDERERS[lang](_sample_facts(rng))
    # A 4-5 sentence passage: the lead and three or four other sentences, in their usual order.
    chosen = sorted(rng.sample(range(len(event.beats)), rng.choice((3, 4))))
    sentences = [rng.choice(event.leads)] + [rng.choice(event.beats[i]) for i in chosen]
    context = _JOINERS[lang].join(s.format(**slots) for s in sentences)
    options: dict[str, list[str]] = {}
    for slot, wordings in event.questions.items():
        answer = slots[slot]
        if context.count(answer) != 1:  # the answer must be one unambiguous span
            continue
        good = [q.format(**slots) for q in wordings
                if _states_facts(q, slots, context) and answer not in q.format(**slots)]
        if good:
            options[slot] = good
    if not options:
        return None
    slot = rng.choice(sorted(options))  # pick the question type first, so types stay balanced
    return {"context": context, "question": rng.choice(options[slot]), "answers": [slots[slot]]}


def _summary_example(rng: random.Random, lang: str, event: Event) -> dict[str, Any] | None:
    slots = _SLOT_RENDERERS[lang](_sample_facts(rng))
    sentences = [rng.choice(event.leads)] + [rng.choice(wordings) for wordings in event.beats]
    article = _JOINERS[lang].join(s.format(**slots) for s in sentences)
    faithful = [t for t in event.summaries if _states_facts(t, slots, article)]
    if not faithful:
        return None
    title = event.title.format(**slots)
    if lang == "en":
        title = title[0].upper() + title[1:]
    return {"article": article, "summary": rng.choice(faithful).format(**slots), "title": title}


def _seed(task: str, lang: str) -> int:
    # crc32 of a fixed string: the same on every machine (unlike hash(), which is salted).
    return zlib.crc32(f"grasp-lora demo/{task}/{lang}".encode("utf-8"))


def build_pool(task: str, lang: str, size: int = POOL_SIZE) -> list[dict[str, Any]]:
    kind = TASK_KINDS[task]
    make = _qa_example if kind == "qa" else _summary_example
    key_fields = ("context", "question") if kind == "qa" else ("article",)
    rng = random.Random(_seed(task, lang))
    events = _EVENTS[lang]
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, ...]] = set()
    attempts = 0
    while len(rows) < size:
        attempts += 1
        if attempts > size * 50:  # pragma: no cover - only a broken template table gets here
            raise RuntimeError(f"demo pool {task}/{lang}: could only build {len(rows)} of {size} examples")
        event = events[_EVENT_ORDER[len(rows) % len(_EVENT_ORDER)]]  # rotate so every kind is present
        example = make(rng, lang, event)
        if example is None:
            continue
        key = tuple(example[k] for k in key_fields)
        if key in seen:
            continue
        seen.add(key)
        rows.append({"id": f"demo-{task}-{lang}-{len(rows):04d}", **example})
    return rows


def pool_text(task: str, lang: str) -> str:
    """The file content of one pool: one JSON object per line, UTF-8 text as it is."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in build_pool(task, lang))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder of the pool files (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="compare with the files instead of writing them")
    args = parser.parse_args(argv)
    differ = []
    for task in TASK_KINDS:
        for lang in LANGUAGES:
            path = args.out / f"{task}.{lang}.jsonl"
            data = pool_text(task, lang).encode("utf-8")
            if args.check:
                if not path.is_file() or path.read_bytes() != data:
                    differ.append(path.name)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            print(f"{path.name}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    if differ:
        print(f"differ from the generator: {', '.join(differ)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
