"""The offline task suite: two small tasks written for Layer Lab, built from templates by
a seeded generator (`build`), shipped as JSONL under analysis/tasks/suite/ and run by
lm-eval through the same task-file mapping as a user's file (`files.task_config`).

- `layerlab_agreement` (multiple choice, log-likelihood, 240 items): BLiMP-style minimal
  pairs. The question is a sentence prefix; the two choices differ in one word that the
  prefix decides: subject-verb agreement across a prepositional attractor ("The key to
  the cabinets" is / are), demonstrative-noun number ("this book" / "these book"),
  reflexive gender ("The king hurt" himself / herself) and past tense after a time
  adverb ("Yesterday the girl" wrote / writes). 60 items each, the correct choice's
  position shuffled.
- `layerlab_sequences` (generative exact match, 240 items): rule-based continuations.
  Each prompt shows two solved lines of the same rule, then a list to continue:
  counting up by one (60) or by ten (50), number words (40), months, letters and days
  of the week (30 each; months and days wrap around). The target is the next item.

`python -m analysis.tasks.suite` rewrites the files; a test checks that they equal what
the generator gives.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

SUITE_DIR = Path(__file__).with_name("suite")
SEED = 20261208

SUBJECTS = [("key", "keys"), ("author", "authors"), ("picture", "pictures"), ("road", "roads"),
            ("teacher", "teachers"), ("box", "boxes"), ("letter", "letters"), ("song", "songs"),
            ("window", "windows"), ("doctor", "doctors")]
ATTRACTORS = [("cabinet", "cabinets"), ("book", "books"), ("village", "villages"), ("student", "students"),
              ("garden", "gardens"), ("house", "houses")]
PREPOSITIONS = ["to the", "of the", "near the", "behind the", "beside the"]
PREDICATES = [("is", "are", "old."), ("was", "were", "ready."), ("has", "have", "gone."), ("is", "are", "here.")]
NOUNS = ["book", "chair", "flower", "car", "picture", "cup", "shirt", "window", "apple", "table", "bottle", "lamp"]
PLURAL = {"book": "books", "chair": "chairs", "flower": "flowers", "car": "cars", "picture": "pictures", "cup": "cups",
          "shirt": "shirts", "window": "windows", "apple": "apples", "table": "tables", "bottle": "bottles",
          "lamp": "lamps"}
VERBS_OBJECT = ["She bought", "He painted", "We cleaned", "They found", "I liked", "You broke"]
MALE = ["king", "father", "man", "boy", "prince", "brother", "husband", "uncle", "waiter", "monk"]
FEMALE = ["queen", "mother", "woman", "girl", "princess", "sister", "wife", "aunt", "waitress", "nun"]
REFLEXIVE_VERBS = ["hurt", "saw", "praised", "blamed", "washed", "introduced"]
PAST = [("wrote", "writes", "a letter."), ("ate", "eats", "an apple."), ("went", "goes", "home."),
        ("saw", "sees", "a bird."), ("took", "takes", "the bus."), ("made", "makes", "a cake."),
        ("found", "finds", "a coin."), ("sang", "sings", "a song."), ("drew", "draws", "a map."),
        ("bought", "buys", "some bread.")]
PEOPLE = ["the girl", "my brother", "the teacher", "our neighbour", "the old man", "my friend"]
TIME_ADVERBS = ["Yesterday", "Last week", "Two days ago", "Last night"]

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
LETTERS = [chr(c) for c in range(ord("A"), ord("Z") + 1)]


def _pair(rng: random.Random, question: str, right: str, wrong: str) -> dict:
    choices = [right, wrong]
    rng.shuffle(choices)
    return {"question": question, "choices": choices, "answer": choices.index(right)}


def _attractor(rng: random.Random) -> dict:
    """Subject-verb agreement across an attractor of the other number."""
    subject, attractor = rng.choice(SUBJECTS), rng.choice(ATTRACTORS)
    plural = rng.random() < 0.5
    sg, pl, rest = rng.choice(PREDICATES)
    question = f"The {subject[plural]} {rng.choice(PREPOSITIONS)} {attractor[not plural]}"
    return _pair(rng, question, f"{pl if plural else sg} {rest}", f"{sg if plural else pl} {rest}")


def _determiner(rng: random.Random) -> dict:
    """A demonstrative and its noun agree in number."""
    noun, plural = rng.choice(NOUNS), rng.random() < 0.5
    det = "these" if plural else "this"
    return _pair(rng, rng.choice(VERBS_OBJECT), f"{det} {PLURAL[noun] if plural else noun}.",
                 f"{det} {noun if plural else PLURAL[noun]}.")


def _reflexive(rng: random.Random) -> dict:
    """A reflexive agrees with its antecedent's gender."""
    male = rng.random() < 0.5
    person = rng.choice(MALE if male else FEMALE)
    right, wrong = ("himself.", "herself.") if male else ("herself.", "himself.")
    return _pair(rng, f"The {person} {rng.choice(REFLEXIVE_VERBS)}", right, wrong)


def _tense(rng: random.Random) -> dict:
    """Past tense after a past time adverb."""
    past, present, rest = rng.choice(PAST)
    return _pair(rng, f"{rng.choice(TIME_ADVERBS)} {rng.choice(PEOPLE)}", f"{past} {rest}", f"{present} {rest}")


AGREEMENT_KINDS = {"attractor": (60, _attractor), "determiner": (60, _determiner), "reflexive": (60, _reflexive),
                   "tense": (60, _tense)}


def _distinct(rng: random.Random, kinds: dict) -> list[dict]:
    """`n` distinct items of each kind, in the order of `kinds` (a repeat is drawn again)."""
    items, seen = [], set()
    for n, make in kinds.values():
        for _ in range(n):
            item = make(rng)
            while json.dumps(item) in seen:
                item = make(rng)
            seen.add(json.dumps(item))
            items.append(item)
    return items


def agreement_items(rng: random.Random) -> list[dict]:
    return _distinct(rng, AGREEMENT_KINDS)


def _sequence(rng: random.Random, kind: str) -> tuple[list[str], str]:
    """(the shown items, the next one) of one rule."""
    length = rng.choice([3, 4])
    if kind == "count":
        start = rng.randint(1, 95)
        values = [str(start + i) for i in range(length + 1)]
    elif kind == "tens":
        start = rng.randint(1, 9) * 10
        values = [str(start + 10 * i) for i in range(length + 1)]
    else:
        pool = {"days": DAYS, "months": MONTHS, "letters": LETTERS, "words": WORDS}[kind]
        start = rng.randrange(len(pool) - (length + 1) if kind in ("letters", "words") else len(pool))
        values = [pool[(start + i) % len(pool)] for i in range(length + 1)]
    return values[:-1], values[-1]


DEMOS = 2


def _continuation(kind: str):
    def make(rng: random.Random) -> dict:
        lines = []
        for _ in range(DEMOS):
            shown, nxt = _sequence(rng, kind)
            lines.append(f"Q: {', '.join(shown)},\nA: {nxt}\n")
        shown, nxt = _sequence(rng, kind)
        return {"prompt": "Continue the list.\n" + "".join(lines) + f"Q: {', '.join(shown)},\nA:", "target": nxt}
    return make


SEQUENCE_KINDS = {kind: (n, _continuation(kind)) for kind, n in
                  {"count": 60, "tens": 50, "words": 40, "months": 30, "letters": 30, "days": 30}.items()}


def sequence_items(rng: random.Random) -> list[dict]:
    return _distinct(rng, SEQUENCE_KINDS)


TASKS = {"layerlab_agreement": ("multiple_choice", agreement_items),
         "layerlab_sequences": ("generate_until", sequence_items)}


def build() -> dict[str, list[dict]]:
    """Every suite task's items, from one seeded generator per task."""
    return {name: make(random.Random(f"{SEED}-{name}")) for name, (_, make) in TASKS.items()}


def write(directory: Path = SUITE_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, items in build().items():
        text = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
        (directory / f"{name}.jsonl").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    write()
