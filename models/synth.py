"""A deterministic synthetic Arabic corpus in the nested Wojood format.

The real WojoodNER corpus is distributed on request only, so tests, benchmarks and demos need a stand-in
with the same shape: all 21 entity types, Wojood-like nesting (a GPE inside an ORG inside an OCC, a DATE
inside an EVENT, a CURR inside a MONEY, a UNIT inside a QUANTITY), tags listed outermost first, mostly
short sentences plus about 1% of very long ones (150-300 tokens) to exercise window splitting. Names are
shared between contexts (a city alone is a GPE, inside "جامعة ..." it is part of an ORG) so a model has
something to learn but cannot just memorise one tag per word.

Everything is drawn from one ``random.Random(seed)`` over ordered tuples: same seed, same corpus.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

from nerlab.models.wojood import Sentence, write_file

# A piece of a sentence: per token, its tags outermost first (empty: outside every entity).
Chunk = list[tuple[str, list[str]]]


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


# The word lists (names, places, clause templates, ...), kept as data beside this file (package data).
WORDS_FILE = Path(__file__).with_name("synth_words.json")
W = SimpleNamespace(**{k: _tuples(v) for k, v in json.loads(WORDS_FILE.read_text(encoding="utf-8")).items()
                       if not k.startswith("_")})
YEARS = tuple(str(y) for y in range(1917, 2025))


def _words(text: str) -> Chunk:
    return [(w, []) for w in text.split()]


def _wrap(typ: str, *parts: Chunk) -> Chunk:
    """One entity of ``typ`` over the concatenated parts: its tag goes in front (outermost first)."""
    tokens = [tok for part in parts for tok in part]
    return [(w, [("I-" if i else "B-") + typ, *tags]) for i, (w, tags) in enumerate(tokens)]


class _Generator:
    """Draws entities and sentences from one random stream; one method per entity type."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.slots: dict[str, Callable[[], Chunk]] = {
            "PERS": self.pers, "NORP": self.norp, "OCC": self.occ, "ORG": self.org, "GPE": self.gpe,
            "LOC": self.loc, "FAC": self.fac, "EVENT": self.event, "DATE": self.date, "TIME": self.time,
            "LANGUAGE": self.language, "WEBSITE": self.website, "LAW": self.law, "PRODUCT": self.product,
            "CARDINAL": self.cardinal, "ORDINAL": self.ordinal, "PERCENT": self.percent,
            "QUANTITY": self.quantity, "MONEY": self.money, "CURR": self.curr, "WHO": self.who,
        }
        self.templates = [t.split() for t in W.CLAUSES]

    def pick(self, options: Sequence[str]) -> Chunk:
        return _words(self.r.choice(options))

    def number(self) -> str:
        r = self.r.random()
        if r < 0.6:
            return str(self.r.randint(2, 999))
        return str(self.r.randint(1000, 90000)) if r < 0.8 else self.r.choice(W.NUMBER_WORDS)

    # --- people, groups, offices
    def pers(self) -> Chunk:
        name = self.pick(W.FIRST) + (self.pick(W.LAST) if self.r.random() < 0.8 else [])
        return _wrap("PERS", name)

    def norp(self) -> Chunk:
        r = self.r.random()
        if r < 0.45:
            return _wrap("NORP", _words(self.r.choice(W.COUNTRIES)[2]))
        if r < 0.8:
            return _wrap("NORP", self.pick(W.NORP_PLAIN))
        if r < 0.93:  # "أهالي نابلس": a group named after a place
            return _wrap("NORP", self.pick(W.NORP_OF), self.gpe())
        return _wrap("NORP", _words("عناصر"), _wrap("ORG", _words("داعش")))

    def occ(self) -> Chunk:
        r = self.r.random()
        if r < 0.3:
            return _wrap("OCC", self.pick(W.OCC_PLAIN))
        if r < 0.55:  # "وزير الخارجية [الفلسطيني]": the ministry's field is an ORG inside the office
            adj = _words(self.r.choice(W.COUNTRIES)[1][:-1]) if self.r.random() < 0.3 else []
            return _wrap("OCC", _words("وزير"), _wrap("ORG", self.pick(W.FIELDS)), adj)
        if r < 0.75:
            return _wrap("OCC", self.pick(W.OCC_HEAD), self.org())
        if r < 0.85:  # "رئيس بلدية مدينة البيرة": OCC > ORG > GPE
            return _wrap("OCC", _words("رئيس"), _wrap("ORG", _words("بلدية"), self.gpe(city=True)))
        if r < 0.93:
            return _wrap("OCC", _words("سفير"), self.gpe(), _words("لدى"), self.gpe())
        return _wrap("OCC", _words("أستاذ"), self.pick(W.SUBJECTS), _words("في"), self.org())

    def who(self) -> Chunk:
        r = self.r.random()
        if r < 0.4:
            return self.pers()
        return self.occ() + self.pers() if r < 0.75 else self.org()

    # --- places
    def gpe(self, city: bool = False) -> Chunk:
        r = self.r.random()
        if city or r < 0.45:
            prefix = _words("مدينة") if self.r.random() < 0.15 else []
            return _wrap("GPE", prefix, self.pick(W.CITIES))
        if r < 0.85:
            return _wrap("GPE", _words(self.r.choice(W.COUNTRIES)[0]))
        if r < 0.93:
            return _wrap("GPE", self.pick(W.PLACES))
        kind = self.r.choice(("مخيم", "قرية", "محافظة"))
        return _wrap("GPE", _words(kind), self.pick(W.CAMPS if kind == "مخيم" else W.VILLAGES))

    def loc(self) -> Chunk:
        r = self.r.random()
        if r < 0.45:
            return _wrap("LOC", self.pick(W.LOC_PLAIN))
        if r < 0.6:
            return _wrap("LOC", _words("نهر"), self.pick(W.RIVERS))
        if r < 0.7:
            return _wrap("LOC", _words("نهر الأردن") if self.r.random() < 0.5 else _words("غور الأردن"))
        if r < 0.8:
            return _wrap("LOC", _words("جبل"), self.pick(W.MOUNTAINS))
        return _wrap("LOC", self.pick(W.SIDES), self.gpe())

    def fac(self) -> Chunk:
        r = self.r.random()
        if r < 0.4:
            return _wrap("FAC", self.pick(W.FAC_PLAIN))
        if r < 0.6:
            return _wrap("FAC", _words("مطار"), self.gpe(city=True), _words("الدولي") if r < 0.5 else [])
        if r < 0.8:
            return _wrap("FAC", _words("مستشفى"), self.pick(W.HOSPITALS))
        if r < 0.9:
            return _wrap("FAC", _words("مستشفى"), self.gpe(city=True), _words("الحكومي"))
        return _wrap("FAC", _words(self.r.choice(("ميناء", "معبر"))), self.gpe(city=True))

    # --- organisations and events
    def org(self) -> Chunk:
        r = self.r.random()
        if r < 0.3:
            return _wrap("ORG", self.pick(W.ORG_PLAIN))
        if r < 0.45:
            return _wrap("ORG", _words("جامعة"), self.gpe(city=True))
        if r < 0.6:
            adj = _words(self.r.choice(W.COUNTRIES)[1]) if self.r.random() < 0.4 else []
            return _wrap("ORG", _words("وزارة"), self.pick(W.FIELDS), adj)
        if r < 0.68:
            return _wrap("ORG", _words("بنك"), self.gpe())
        if r < 0.76:
            return _wrap("ORG", _words("بلدية"), self.gpe(city=True))
        if r < 0.84:
            return _wrap("ORG", self.pick(W.ORG_BODY), _words(self.r.choice(W.COUNTRIES)[1]))
        if r < 0.9:
            return _wrap("ORG", _words("نادي"), self.gpe(city=True), _words("الرياضي"))
        if r < 0.95:  # an ORG inside an ORG
            university = _wrap("ORG", _words("جامعة"), self.gpe(city=True))
            return _wrap("ORG", _words("نقابة العاملين في"), university)
        return _wrap("ORG", _words("غرفة تجارة وصناعة"), self.gpe(city=True))

    def event(self) -> Chunk:
        r = self.r.random()
        if r < 0.2:  # "مؤتمر مدريد للسلام عام 1991"
            return _wrap("EVENT", _words("مؤتمر"), self.gpe(), _words("للسلام"), self.year_date())
        if r < 0.35:
            return _wrap("EVENT", _words("الانتفاضة"), self.first_or_second())
        if r < 0.5:
            return _wrap("EVENT", _words("حرب"), self.year_date())
        if r < 0.6:
            return _wrap("EVENT", _words("كأس العالم"), self.gpe(), _wrap("DATE", self.pick(YEARS)))
        if r < 0.7:
            return _wrap("EVENT", _words("معرض"), self.gpe(city=True), _words("الدولي للكتاب"))
        if r < 0.8:
            return _wrap("EVENT", _words("قمة"), self.org(), _words("في"), self.gpe(city=True))
        if r < 0.87:
            return _wrap("EVENT", _words("الحرب العالمية"), self.first_or_second())
        return _wrap("EVENT", self.pick(W.EVENT_PLAIN))

    def first_or_second(self) -> Chunk:
        return _wrap("ORDINAL", self.pick(("الأولى", "الثانية")))

    # --- time
    def year_date(self) -> Chunk:
        year = self.r.choice(YEARS)
        return _wrap("DATE", _words(f"عام ( {year} )" if self.r.random() < 0.15 else f"عام {year}"))

    def date(self) -> Chunk:
        r = self.r.random()
        if r < 0.2:
            return _wrap("DATE", _words(self.r.choice(YEARS)))
        if r < 0.4:
            return self.year_date()
        if r < 0.6:
            day = str(self.r.randint(1, 31))
            return _wrap("DATE", _words(day), self.pick(W.MONTHS), _words(self.r.choice(YEARS)))
        if r < 0.7:
            return _wrap("DATE", self.pick(W.MONTHS), _words(self.r.choice(YEARS)))
        if r < 0.8:
            return _wrap("DATE", _words("يوم") if r < 0.75 else [], self.pick(W.WEEKDAYS))
        return _wrap("DATE", self.pick(W.DATE_PLAIN))

    def time(self) -> Chunk:
        r = self.r.random()
        if r < 0.4:
            part = self.pick(W.DAY_PARTS) if self.r.random() < 0.7 else []
            return _wrap("TIME", _words("الساعة"), self.pick(W.HOURS), part)
        if r < 0.55:
            clock = f"{self.r.randint(1, 12)}:{self.r.choice(('00', '15', '30', '45'))}"
            return _wrap("TIME", _words(f"الساعة {clock}"))
        if r < 0.65:
            return _wrap("TIME", _words(f"{self.r.randint(2, 59)}"), self.pick(("دقيقة", "ثانية", "ساعة")))
        return _wrap("TIME", self.pick(W.TIME_PLAIN))

    # --- language, web, law, products
    def language(self) -> Chunk:
        prefix = self.r.choice(((), ("اللغة",), ("باللغة",), ("باللغة",)))
        return _wrap("LANGUAGE", _words(" ".join(prefix)), self.pick(W.LANGUAGES))

    def website(self) -> Chunk:
        if self.r.random() < 0.4:
            return _wrap("WEBSITE", self.pick(W.SITE_PLAIN))
        scheme = self.r.choice(("", "http : / / ", "https : / / "))
        return _wrap("WEBSITE", _words(f"{scheme}www . {self.r.choice(W.SITE_NAMES)} . {self.r.choice(W.TLDS)}"))

    def law(self) -> Chunk:
        r = self.r.random()
        if r < 0.25:
            return _wrap("LAW", self.pick(W.LAW_PLAIN))
        if r < 0.5:
            adj = _words(self.r.choice(W.COUNTRIES)[1][:-1]) if self.r.random() < 0.5 else []
            return _wrap("LAW", _words("قانون"), self.pick(W.LAW_KINDS), adj)
        if r < 0.65:  # "المادة ( 46 )": the article number is an ORDINAL inside the LAW
            article = _wrap("ORDINAL", _words(str(self.r.randint(1, 120))))
            return _wrap("LAW", _words("المادة ("), article, _words(")"))
        if r < 0.8:
            number = _wrap("ORDINAL", _words(str(self.r.randint(181, 2700))))
            return _wrap("LAW", _words("قرار"), _wrap("ORG", _words("مجلس الأمن")), _words("رقم"), number)
        if r < 0.9:
            return _wrap("LAW", _words("اتفاقية"), self.gpe(city=True))
        geneva, fourth = _wrap("GPE", _words("جنيف")), _wrap("ORDINAL", _words("الرابعة"))
        return _wrap("LAW", _words("اتفاقية"), geneva, fourth)

    def product(self) -> Chunk:
        model = _words(str(self.r.randint(5, 16))) if self.r.random() < 0.2 else []
        return _wrap("PRODUCT", self.pick(W.PRODUCTS), model)

    # --- numbers
    def cardinal(self) -> Chunk:
        return _wrap("CARDINAL", _words(self.number()))

    def ordinal(self) -> Chunk:
        return _wrap("ORDINAL", self.pick(W.ORDINALS))

    def percent(self) -> Chunk:
        n = f"{self.r.randint(1, 99)}" + (f".{self.r.randint(1, 9)}" if self.r.random() < 0.3 else "")
        form = self.r.choice(("{} %", "{} بالمئة", "{} في المئة", "%{}"))
        return _wrap("PERCENT", _words(form.format(n)))

    def quantity(self) -> Chunk:
        n = self.r.randint(2, 5000)
        unit = self.r.choice(W.UNITS)[0 if n < 11 else 1]
        scale = self.pick(W.SCALES[:3]) if self.r.random() < 0.1 else []
        return _wrap("QUANTITY", _words(str(n)), scale, _wrap("UNIT", _words(unit)))

    def money(self) -> Chunk:
        r = self.r.random()
        if r < 0.15:
            amount = self.pick(W.HALF) + (self.pick(W.SCALES[:3]) if self.r.random() < 0.5 else [])
        else:
            amount = _words(self.number()) + (self.pick(W.SCALES) if self.r.random() < 0.4 else [])
        return _wrap("MONEY", amount, self.curr())

    def curr(self) -> Chunk:
        return _wrap("CURR", self.pick(W.CURRENCIES))

    # --- sentences
    def clause(self) -> Chunk:
        out: Chunk = []
        for word in self.r.choice(self.templates):
            out += self.slots[word[1:-1]]() if word.startswith("{") else [(word, [])]
        return out

    def sentence(self) -> Sentence:
        """1-4 clauses and 5-60 tokens; about 1% run on to 150-300 tokens to exercise windowing."""
        if self.r.random() < 0.01:
            min_len, min_clauses, limit = self.r.randint(150, 270), 1, 300
        else:
            min_len, min_clauses, limit = 5, self.r.choice((1, 1, 1, 1, 2, 2, 2, 3, 3, 4)), 60
        chunk: Chunk = self.pick(W.OPENERS) if self.r.random() < 0.15 else []
        clauses = 0
        while clauses < min_clauses or len(chunk) < min_len:
            glue = self.pick(W.JOINERS) if clauses else []
            nxt = glue + self.clause()
            if len(chunk) + len(nxt) + 2 > limit:  # +2: room for ". $#$"
                if clauses and len(chunk) >= min_len:
                    break
                continue
            chunk += nxt
            clauses += 1
        chunk += _words(". $#$" if self.r.random() < 0.05 else ".")
        return Sentence([w for w, _ in chunk], [tags or ["O"] for _, tags in chunk])


def synth_sentences(n: int, seed: int) -> list[Sentence]:
    """``n`` synthetic nested sentences; the same seed always gives the same sentences."""
    gen = _Generator(seed)
    return [gen.sentence() for _ in range(n)]


def write_corpus(
    out_dir: str | Path, sentences_total: int, seed: int, split: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> dict[str, Path]:
    """Write ``train.txt``, ``val.txt`` and ``test.txt`` (Wojood nested format) split by ``split``."""
    if len(split) != 3 or any(p < 0 for p in split) or abs(sum(split) - 1) > 1e-6:
        raise ValueError(f"split must be three non-negative fractions summing to 1, got {split}")
    sentences = synth_sentences(sentences_total, seed)
    n_train = round(split[0] * sentences_total)
    n_val = round(split[1] * sentences_total)
    parts = {
        "train": sentences[:n_train],
        "val": sentences[n_train:n_train + n_val],
        "test": sentences[n_train + n_val:],
    }
    if not all(parts.values()):
        raise ValueError(f"{sentences_total} sentences leave a split empty under {split}")
    paths = {}
    for name, part in parts.items():
        paths[name] = Path(out_dir) / f"{name}.txt"
        write_file(paths[name], part)
    return paths
