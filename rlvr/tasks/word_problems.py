"""Templated GSM8K-flavoured word problems with integer answers and step-by-step worked solutions.

A story follows one running quantity (a collection of things, an amount of money, a distance
travelled): it opens with a starting amount, then a chain of events changes it, and the question
asks for the final amount (or, when the last event shares it out, for one share). Names, objects
and units come from small lists; every number is drawn so that each step stays a non-negative
integer (divisions are exact, percentages of whole amounts are whole).

| level | events after the opening | largest drawn number | percent events |
|-------|--------------------------|----------------------|----------------|
| 1     | 1                        | 20                   | no             |
| 2     | 2                        | 30                   | no             |
| 3     | 2                        | 100                  | yes            |
| 4     | 3                        | 200                  | yes            |
| 5     | 4                        | 1000                 | yes            |

The worked solution writes one line per arithmetic step, `label: expression=value`, e.g.

    Mia has 14 marbles. She buys 3 bags with 6 marbles in each. She gives 9 marbles to Leo.
    How many marbles does Mia have now?
    <think>start: 14
    3 bags of 6: 3*6=18
    after buying: 14+18=32
    after giving: 32-9=23</think><answer>23</answer>
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from rlvr.tasks.base import Example
from rlvr.tasks.generator import GeneratorSource, r1_solution
from rlvr.tasks.registry import register_task


@dataclass(frozen=True)
class LevelShape:
    """How big a story is at one level."""

    events: int
    """Events after the opening sentence (each is one or two arithmetic steps)."""
    top: int
    """The largest number drawn for amounts and prices."""
    percent: bool
    """Whether percentage events (discounts, selling a share) may appear."""


LEVELS: dict[int, LevelShape] = {
    1: LevelShape(events=1, top=20, percent=False),
    2: LevelShape(events=2, top=30, percent=False),
    3: LevelShape(events=2, top=100, percent=True),
    4: LevelShape(events=3, top=200, percent=True),
    5: LevelShape(events=4, top=1000, percent=True),
}

NAMES = [("Mia", "She"), ("Leo", "He"), ("Ava", "She"), ("Noah", "He"), ("Zoe", "She"), ("Omar", "He"),
         ("Lena", "She"), ("Ravi", "He"), ("Sara", "She"), ("Tom", "He"), ("Ines", "She"), ("Kofi", "He"),
         ("Yuki", "She"), ("Ben", "He"), ("Nora", "She"), ("Jamal", "He"), ("Elif", "She"), ("Marco", "He"),
         ("Priya", "She"), ("Sam", "He")]
POSSESSIVE = {"She": "her", "He": "his"}
PERCENTS = [10, 20, 25, 50, 75]
GROUPS = ["friends", "classmates", "cousins", "neighbours", "teammates"]


@dataclass(frozen=True)
class Thing:
    """A countable object: its plural, the container it comes in, and how someone makes it."""

    plural: str
    container: str
    make_verb: str


THINGS = [Thing("marbles", "bag", "collects"), Thing("stickers", "sheet", "collects"),
          Thing("apples", "basket", "picks"), Thing("pencils", "box", "sharpens"),
          Thing("cards", "pack", "collects"), Thing("cookies", "tray", "bakes"),
          Thing("bracelets", "box", "makes"), Thing("shells", "jar", "finds"),
          Thing("eggs", "carton", "collects"), Thing("paper cranes", "box", "folds"),
          Thing("muffins", "tray", "bakes"), Thing("stamps", "album", "collects")]
ITEMS = [("notebooks", "notebook"), ("pens", "pen"), ("books", "book"), ("tickets", "ticket"),
         ("sandwiches", "sandwich"), ("plants", "plant"), ("toy cars", "toy car"), ("mugs", "mug")]
CHORES = ["mowing lawns", "walking dogs", "babysitting", "washing cars", "selling lemonade", "tutoring"]
VEHICLES = [("cycles", 10, 30), ("walks", 3, 6), ("drives", 40, 120), ("rides a scooter", 8, 25), ("runs", 6, 15),
            ("rows", 3, 8)]
"""(verb, slowest, fastest speed in km an hour)."""


@dataclass
class Cast:
    """The words of one story: who, what, and the unit the answer is counted in."""

    name: str
    pronoun: str
    friend: str
    group: str
    thing: Thing
    item: tuple[str, str]
    chore: str
    vehicle: tuple[str, int, int]

    @property
    def possessive(self) -> str:
        return POSSESSIVE[self.pronoun]


@dataclass
class Step:
    """One sentence of the story and the worked lines that compute the new amount."""

    sentence: str
    lines: list[str]
    value: int
    question: str | None = None
    """Set by a closing event (sharing out) that changes what is asked."""


Event = Callable[[random.Random, Cast, int, LevelShape], "Step | None"]
"""(rng, cast, current amount, level shape) -> the next step, or None when it does not fit."""


def _small(rng: random.Random, shape: LevelShape) -> int:
    """A multiplier or group size: 2..9 (2..5 at the smallest level)."""
    return rng.randint(2, 5 if shape.top <= 20 else 9)


def _amount(rng: random.Random, shape: LevelShape) -> int:
    return rng.randint(2, shape.top)


def _percent_of(rng: random.Random, value: int) -> int | None:
    """A percentage p that takes a whole part of value, or None."""
    fitting = [p for p in PERCENTS if value * p % 100 == 0 and value * p // 100 > 0]
    return rng.choice(fitting) if fitting else None


def _divisor(rng: random.Random, value: int) -> int | None:
    """A group size 2..9 that divides value, or None."""
    fitting = [k for k in range(2, 10) if value % k == 0 and value // k > 0]
    return rng.choice(fitting) if fitting else None


# -- collections of things -----------------------------------------------------------------------

def _things_start(rng: random.Random, c: Cast, shape: LevelShape) -> Step:
    t = c.thing
    if rng.random() < 0.5:
        a = _amount(rng, shape)
        return Step(f"{c.name} has {a} {t.plural}.", [f"start: {a}"], a)
    rate, days = _amount(rng, shape) // 2 + 1, _small(rng, shape)
    return Step(f"{c.name} {t.make_verb} {rate} {t.plural} a day for {days} days.",
                [f"{days} days of {rate}: {rate}*{days}={rate * days}"], rate * days)


def _gain(rng: random.Random, c: Cast, v: int, shape: LevelShape) -> Step:
    b = _amount(rng, shape)
    verb = rng.choice(["buys", "gets", "is given"])
    return Step(f"{c.pronoun} {verb} {b} more.", [f"after {b} more: {v}+{b}={v + b}"], v + b)


def _give(rng: random.Random, c: Cast, v: int, shape: LevelShape) -> Step | None:
    if v < 2:
        return None
    b = rng.randint(1, min(v - 1, shape.top))
    return Step(f"{c.pronoun} gives {b} {c.thing.plural} to {c.friend}.",
                [f"after giving: {v}-{b}={v - b}"], v - b)


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("x", "s", "ch")) else "s")


def _packs(rng: random.Random, c: Cast, v: int, shape: LevelShape) -> Step:
    k, each = _small(rng, shape), rng.randint(2, max(3, shape.top // 4))
    t = c.thing
    return Step(f"{c.pronoun} buys {k} {_plural(t.container)} with {each} {t.plural} in each.",
                [f"{k} {_plural(t.container)} of {each}: {k}*{each}={k * each}", f"after buying: {v}+{k * each}={v + k * each}"],
                v + k * each)


def _sell_percent(rng: random.Random, c: Cast, v: int, shape: LevelShape) -> Step | None:
    p = _percent_of(rng, v) if shape.percent else None
    if p is None or p == 100:
        return None
    part = v * p // 100
    return Step(f"{c.pronoun} sells {p}% of {c.possessive} {c.thing.plural}.",
                [f"{p}% of {v}: {v}*{p}/100={part}", f"after selling: {v}-{part}={v - part}"], v - part)


def _share_things(rng: random.Random, c: Cast, v: int, shape: LevelShape) -> Step | None:
    k = _divisor(rng, v)
    if k is None:
        return None
    return Step(f"{c.pronoun} shares all of them equally among {k} {c.group}.",
                [f"each of {k}: {v}/{k}={v // k}"], v // k,
                question=f"How many {c.thing.plural} does each of the {c.group} get?")


# -- money ---------------------------------------------------------------------------------------

def _money_start(rng: random.Random, c: Cast, shape: LevelShape) -> Step:
    if rng.random() < 0.5:
        a = _amount(rng, shape) * 2
        return Step(f"{c.name} has ${a}.", [f"start: {a}"], a)
    wage, hours = rng.randint(2, max(5, shape.top // 5)), _small(rng, shape)
    return Step(f"{c.name} earns ${wage} an hour and works {hours} hours.",
                [f"pay: {wage}*{hours}={wage * hours}"], wage * hours)


def _earn(rng: random.Random, c: Cast, v: int, shape: LevelShape) -> Step:
    b = _amount(rng, shape)
    return Step(f"{c.pronoun} earns ${b} more {c.chore}.", [f"after earning: {v}+{b}={v + b}"], v + b)


def _buy_items(rng: random.Random, c: Cast, v: int, shape: LevelShape) -> Step | None:
    plural, _ = c.item
    k = _small(rng, shape)
    if v // k < 1:
        return None
    price = rng.randint(1, min(v // k, shape.top))
    cost = k * price
    return Step(f"{c.pronoun} buys {k} {plural} for ${price} each.",
                [f"cost: {k}*{price}={cost}", f"left: {v}-{cost}={v - cost}"], v - cost)


def _buy_discounted(rng: random.Random, c: Cast, v: int, shape: LevelShape) -> Step | None:
    if not shape.percent:
        return None
    _, single = c.item
    # Prices that are multiples of 20 make every listed percentage whole.
    prices = [q for q in range(20, min(v, 5 * shape.top) + 1, 20)]
    if not prices:
        return None
    price, p = rng.choice(prices), rng.choice(PERCENTS)
    off = price * p // 100
    paid = price - off
    return Step(f"{c.pronoun} buys a {single} priced ${price} with {p}% off.",
                [f"discount: {price}*{p}/100={off}", f"price paid: {price}-{off}={paid}",
                 f"left: {v}-{paid}={v - paid}"], v - paid)


def _split_money(rng: random.Random, c: Cast, v: int, shape: LevelShape) -> Step | None:
    k = _divisor(rng, v)
    if k is None:
        return None
    return Step(f"{c.pronoun} splits all of {c.possessive} money equally among {k} {c.group}.",
                [f"each of {k}: {v}/{k}={v // k}"], v // k,
                question=f"How many dollars does each of the {c.group} get?")


# -- distance: rate x time -----------------------------------------------------------------------

def _speed_and_hours(rng: random.Random, c: Cast, shape: LevelShape) -> tuple[int, int]:
    _, slowest, fastest = c.vehicle
    return rng.randint(slowest, fastest), _small(rng, shape)


def _trip_start(rng: random.Random, c: Cast, shape: LevelShape) -> Step:
    verb = c.vehicle[0]
    speed, hours = _speed_and_hours(rng, c, shape)
    return Step(f"{c.name} {verb} at {speed} km an hour for {hours} hours.",
                [f"distance: {speed}*{hours}={speed * hours}"], speed * hours)


def _trip_leg(rng: random.Random, c: Cast, v: int, shape: LevelShape) -> Step:
    verb = c.vehicle[0]
    speed, hours = _speed_and_hours(rng, c, shape)
    leg = speed * hours
    return Step(f"Then {c.pronoun.lower()} {verb} at {speed} km an hour for {hours} more hours.",
                [f"next leg: {speed}*{hours}={leg}", f"total: {v}+{leg}={v + leg}"], v + leg)


def _trip_extra(rng: random.Random, c: Cast, v: int, shape: LevelShape) -> Step:
    b = _amount(rng, shape)
    ride = rng.choice(["takes a bus for", "takes a train for", "gets a lift for"])
    return Step(f"Then {c.pronoun.lower()} {ride} another {b} km.", [f"total: {v}+{b}={v + b}"], v + b)


def _trip_remaining(rng: random.Random, c: Cast, v: int, shape: LevelShape) -> Step:
    total = v + _amount(rng, shape)
    return Step(f"The whole route is {total} km long.", [f"left: {total}-{v}={total - v}"], total - v,
                question=f"How many km does {c.name} still have to go?")


@dataclass(frozen=True)
class Scenario:
    """A kind of story: its opening, the events that can follow, and the default question."""

    start: Callable[[random.Random, Cast, LevelShape], Step]
    """The opening sentence and the starting amount."""
    events: list[Event]
    """Events that may come anywhere; the first must always fit (it never returns None)."""
    question: Callable[[Cast], str]
    """The question asked unless a closing event sets its own."""
    closings: list[Event] = field(default_factory=list)
    """Events that may only end a story (they change the question)."""


SCENARIOS = [
    Scenario(_things_start, [_gain, _give, _packs, _sell_percent],
             lambda c: f"How many {c.thing.plural} does {c.name} have now?", [_share_things]),
    Scenario(_money_start, [_earn, _buy_items, _buy_discounted],
             lambda c: f"How many dollars does {c.name} have now?", [_split_money]),
    Scenario(_trip_start, [_trip_leg, _trip_extra],
             lambda c: f"How many km does {c.name} travel in total?", [_trip_remaining]),
]


def _cast(rng: random.Random) -> Cast:
    (name, pronoun), (friend, _) = rng.sample(NAMES, 2)
    return Cast(name=name, pronoun=pronoun, friend=friend, group=rng.choice(GROUPS), thing=rng.choice(THINGS),
                item=rng.choice(ITEMS), chore=rng.choice(CHORES), vehicle=rng.choice(VEHICLES))


def _next_step(rng: random.Random, scenario: Scenario, cast: Cast, value: int, shape: LevelShape,
               last: bool) -> Step:
    candidates = scenario.events + (scenario.closings if last else [])
    for _ in range(20):  # try a few random events, then the first one, which always fits
        step = rng.choice(candidates)(rng, cast, value, shape)
        if step is not None:
            return step
    return scenario.events[0](rng, cast, value, shape)


def write_story(rng: random.Random, level: int) -> tuple[str, list[str], int]:
    """(prompt, worked lines, answer) of one story at `level`, drawn only from `rng`."""
    shape = LEVELS[level]
    scenario = rng.choice(SCENARIOS)
    cast = _cast(rng)
    steps = [scenario.start(rng, cast, shape)]
    for i in range(shape.events):
        steps.append(_next_step(rng, scenario, cast, steps[-1].value, shape, last=i == shape.events - 1))
    question = steps[-1].question or scenario.question(cast)
    prompt = " ".join([*(s.sentence for s in steps), question])
    return prompt, [line for s in steps for line in s.lines], steps[-1].value


@register_task("word_problems")
class WordProblemsSource(GeneratorSource):
    """`make_task("word_problems", seed, difficulty)`; the answer is a non-negative integer."""

    name = "word_problems"
    kind = "math"
    max_difficulty = max(LEVELS)

    def make(self, rng: random.Random, level: int) -> Example:
        prompt, lines, answer = write_story(rng, level)
        return Example(
            prompt=prompt,
            reference=str(answer),
            kind=self.kind,
            difficulty=level,
            solution=r1_solution("\n".join(lines), str(answer)),
            meta={"steps": lines},
        )
