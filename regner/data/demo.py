"""A small, deterministic Chinese NER corpus generated from templates written in this repo.

It exists so that ``regner train`` works on a fresh machine with no network and no data: five
entity types, Latin letters and digits inside entities, and nested spans (an organisation whose
name starts with a place keeps both the ORG and the inner LOC span, as GlobalPointer allows).
Names are sampled character by character, so dev and test hold many names never seen in training.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from regner.data.types import Entity, Example

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉萍红娥玲芬燕彬鹏辉斌宇浩凯健俊帆帅旭宁龙林欣晨瑶怡婷雪琳晶颖倩佳雨思梦嘉子轩涵博文远航志诚建国海峰"
PLACES = [
    "北京", "上海", "广州", "深圳", "杭州", "南京", "成都", "武汉", "西安", "重庆", "天津", "苏州",
    "长沙", "郑州", "青岛", "厦门", "昆明", "大连", "沈阳", "哈尔滨", "济南", "福州", "合肥", "南昌",
    "贵阳", "兰州", "乌鲁木齐", "拉萨", "海口", "三亚", "香港", "澳门", "台北", "浙江", "江苏", "广东",
    "四川", "湖南", "湖北", "山东", "河南", "云南",
]
ORG_SUFFIXES = ["大学", "人民医院", "市政府", "第一中学", "图书馆", "博物馆", "科学院", "电视台", "海关", "公安局"]
COMPANY_HEADS = ["华星", "远航", "新创", "金桥", "天成", "恒通", "博雅", "鼎盛", "ABC", "XYZ", "Nova", "K2", "蓝海", "云图"]
COMPANY_TAILS = ["科技有限公司", "集团", "银行", "股份有限公司", "软件公司", "物流公司", "传媒集团"]
TITLES = ["总经理", "董事长", "院长", "校长", "主任", "首席科学家", "工程师", "记者", "教授", "副市长", "CEO", "CTO"]

TEMPLATES = [
    "{PER}担任{ORG}{TITLE}。",
    "{DATE}，{PER}在{LOC}出席了{ORG}举办的发布会。",
    "据{ORG}消息，{PER}将于{DATE}前往{LOC}考察。",
    "{LOC}的{ORG}今天宣布，{PER}出任{TITLE}一职。",
    "记者从{ORG}获悉，该项目由{PER}负责，预计{DATE}完工。",
    "{PER}和{PER}在{LOC}会面，讨论了与{ORG}的合作。",
    "{DATE}{LOC}举行马拉松比赛，{PER}获得冠军。",
    "作为{ORG}的{TITLE}，{PER}表示公司将在{LOC}设立研发中心。",
    "今天天气不错，我们去{LOC}玩吧。",
    "{PER}说：“我在{ORG}工作了十年。”",
    "这家店的菜很好吃，下次还来。",
    "{ORG}与{ORG}签署战略合作协议，双方将在{LOC}共建实验室。",
    "网友称{PER}是{LOC}最年轻的{TITLE}。",
    "{DATE}，{ORG}发布了第3季度财报，营收增长12%。",
]


def _person(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2, 2))))


def _date(rng: random.Random) -> str:
    year = rng.randint(1990, 2025)
    form = rng.randrange(3)
    if form == 0:
        return f"{year}年{rng.randint(1, 12)}月"
    if form == 1:
        return f"{year}年{rng.randint(1, 12)}月{rng.randint(1, 28)}日"
    return f"{rng.randint(1, 12)}月{rng.randint(1, 28)}日"


def _organisation(rng: random.Random) -> tuple[str, list[tuple[int, int, str]]]:
    """An organisation name plus nested spans inside it (relative offsets)."""
    if rng.random() < 0.5:
        place = rng.choice(PLACES)
        return place + rng.choice(ORG_SUFFIXES), [(0, len(place), "LOC")]
    return rng.choice(COMPANY_HEADS) + rng.choice(COMPANY_TAILS), []


def generate_example(rng: random.Random) -> Example:
    template = rng.choice(TEMPLATES)
    text, entities = "", []
    rest = template
    while rest:
        open_at = rest.find("{")
        if open_at < 0:
            text += rest
            break
        text += rest[:open_at]
        close_at = rest.index("}", open_at)
        slot = rest[open_at + 1 : close_at]
        rest = rest[close_at + 1 :]
        start = len(text)
        nested: list[tuple[int, int, str]] = []
        if slot == "PER":
            value = _person(rng)
        elif slot == "LOC":
            value = rng.choice(PLACES)
        elif slot == "ORG":
            value, nested = _organisation(rng)
        elif slot == "TITLE":
            value = rng.choice(TITLES)
        else:
            value = _date(rng)
        text += value
        entities.append(Entity(start, start + len(value), slot))
        entities.extend(Entity(start + s, start + e, t) for s, e, t in nested)
    return Example(text, sorted(set(entities)))


def generate_split(size: int, seed: int, split: str) -> list[Example]:
    """``size`` examples; the split name is mixed into the seed so splits differ."""
    rng = random.Random(f"regner-demo/{split}/{seed}")
    examples = []
    for index in range(size):
        example = generate_example(rng)
        example.source = f"demo:{split}:{index}"
        examples.append(example)
    return examples


def write_jsonl(examples: list[Example], path: Path) -> None:
    """Write examples in the canonical JSONL format (end exclusive)."""
    with path.open("w", encoding="utf-8") as handle:
        for ex in examples:
            entities = [{"start": e.start, "end": e.end, "type": e.type, "text": e.mention(ex.text)} for e in ex.entities]
            handle.write(json.dumps({"text": ex.text, "entities": entities}, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    """``python -m regner.data.demo OUT_DIR`` exports the demo corpus as JSONL for inspection."""
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "demo_data")
    out.mkdir(parents=True, exist_ok=True)
    for split, size in (("train", 1500), ("dev", 300), ("test", 300)):
        write_jsonl(generate_split(size, 0, split), out / f"{split}.jsonl")
    print(f"wrote {out}/{{train,dev,test}}.jsonl")


if __name__ == "__main__":
    main()
