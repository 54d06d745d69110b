"""Training data for the default models: varied tasks over all nine built-in tools, planned in the
plan grammar, run through the real offline tools, so every solver row holds real evidence.

    from train.demo_data import demo_rows
    rows = demo_rows(seed=0, workspace=Path("/tmp/ws"))    # {"planner", "solver", "caller", "tasks"}

What makes it generalise (the lesson of the first pretrained runs: the data decides):

- every built-in tool is planned, ``search_web`` and ``search_bilibili`` included (offline they
  answer with a clear error, and the solver rows teach to say so);
- the tool lines are the toolbox's own (``formats.planner_instruction`` over the real toolbox),
  and the list is sometimes a random subset in random order, so the planner reads the list rather
  than remembering it (and plans tools it has never seen used, given at run time);
- each intent has many templates, each rendered in several styles (polite, terse, lower-case,
  no punctuation, a typo), so one intent has dozens of phrasings (``meta.phrasing``);
- multi-step chains only where a step's output fits the next one's input (typed placeholders:
  any text into ``save_file``/``llm``, a number into ``calculator``);
- no task text is copied from ``data/eval`` (checked here, and by a test).

Each row carries ``meta`` (``intent``, ``phrasing``, ``tools``); training ignores it.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pipeline import formats

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"
TOOLS = ["get_current_time", "search_wiki", "search_web", "search_bilibili", "save_file", "query_sql",
         "python_interpreter", "calculator", "llm"]


# ------------------------------------------------------------------------------------------------
# Phrasing
# ------------------------------------------------------------------------------------------------

STYLES = ("plain", "polite", "lower", "terse", "typo", "greeting", "thanks")
_POLITE = ["Please help me with this: {t}", "Could you help me out? {t}", "I'd like to know: {t}",
           "Kindly answer this: {t}", "If you don't mind: {t}"]
_GREET = ["Hi! {t}", "Hey, {t}", "Quick question: {t}", "Hello. {t}", "Question: {t}"]
_THANKS = ["{t} Thanks.", "{t} Thank you!", "{t} Thanks in advance.", "{t} Cheers."]


def _typo(text: str, protected: Sequence[str], rng: random.Random) -> str:
    """Swap two neighbouring letters of one word that is not part of an entity."""
    spans = [(m.start(), m.end()) for p in protected if p for m in re.finditer(re.escape(p), text)]
    spans += [(m.start(), m.end()) for m in re.finditer(r"'[^']*'|\"[^\"]*\"", text)]  # quoted text is data
    words = [m for m in re.finditer(r"[A-Za-z]{4,}", text)
             if not any(s <= m.start() < e for s, e in spans)]
    if not words:
        return text
    w = rng.choice(words)
    i = rng.randrange(w.start(), w.end() - 1)
    return text[:i] + text[i + 1] + text[i] + text[i + 2:]


def styled(text: str, style: str, protected: Sequence[str], rng: random.Random) -> str:
    """``text`` (a task in its plain form) in one of :data:`STYLES`."""
    if style == "plain":
        return text
    if style == "polite":
        return rng.choice(_POLITE).format(t=text)
    if style == "lower":
        return text.lower()
    if style == "terse":
        return text.rstrip("?.!")
    if style == "typo":
        return _typo(text, protected, rng)
    if style == "greeting":
        return rng.choice(_GREET).format(t=text)
    if style == "thanks":
        return rng.choice(_THANKS).format(t=text)
    raise ValueError(f"unknown style {style!r}")


# ------------------------------------------------------------------------------------------------
# The world the offline tools know
# ------------------------------------------------------------------------------------------------

def _read_csv(name: str) -> list[dict]:
    with open(DATA / "db" / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def wiki_articles(kinds: dict[str, str] | None = None) -> dict[str, str]:
    """``{title: text}`` of the offline encyclopedia (``data/wiki/*.txt``); ``kinds``, when given,
    gets each title's file stem ("history")."""
    out = {}
    for path in sorted((DATA / "wiki").glob("*.txt")):
        title = None
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("# "):
                title = line[2:].strip()
                out[title] = ""
                if kinds is not None:
                    kinds[title] = path.stem
            elif title and line.strip():
                out[title] = (out[title] + " " + line.strip()).strip()
    return out


def _first_sentence(text: str) -> str:
    m = re.match(r"(.+?[a-z0-9)]\.)(\s|$)", text)
    return m.group(1) if m else text


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _quote(title: str, rng: random.Random) -> str:
    return rng.choice([f"'{title}'", f'"{title}"', title])


@dataclass
class World:
    films: list[dict]
    directors: list[dict]
    wiki: dict[str, str]
    people: dict[str, tuple[str, str]] = field(default_factory=dict)   # name -> (born, died) from the wiki
    companies: dict[str, str] = field(default_factory=dict)            # name -> founding year
    founders: dict[str, str] = field(default_factory=dict)             # company -> "A, B and C"
    capitals: dict[str, str] = field(default_factory=dict)             # country -> capital
    kinds: dict[str, str] = field(default_factory=dict)                # title -> its file's stem ("history")

    @classmethod
    def load(cls) -> "World":
        kinds: dict[str, str] = {}
        w = cls(_read_csv("films.csv"), _read_csv("directors.csv"), wiki_articles(kinds), kinds=kinds)
        directors = {d["name"] for d in w.directors}
        for title, text in w.wiki.items():
            m = re.match(r"([A-Z][\w.' -]+?) \((\d{3,4})[-–](\d{4})\)", text)
            if m and title not in directors and "(" not in title:
                w.people[title] = (m.group(2), m.group(3))
            m = re.search(r"founded (?:in |on )?(?:[A-Z][a-z]+ \d{1,2}, )?(\d{4})", text)
            if m and re.search(r"company|corporation|studio|group|manufacturer|maker", text[:160], re.I):
                w.companies[title.split(" (")[0]] = m.group(1)
                m = re.search(r"founded[^.]*? by ([A-Z][^.]*?)(?:,? (?:and|while|to|in|based|first|headquartered)\b[^A-Z]|\.)", text)
                if m:
                    w.founders[title.split(" (")[0]] = m.group(1).strip(" ,")
            m = re.search(r"(?:[Ii]ts capital is|with (?:its capital at )?)([A-Z][a-z]+(?: [A-Z][a-z]+)?)(?: as its capital)?", text)
            if m and re.search(r"\bcountry\b", text[:120]) and "capital" in text:
                w.capitals[title] = m.group(1)
        return w


# ------------------------------------------------------------------------------------------------
# Intents: templates, a plan, and how the answer follows from the evidence
# ------------------------------------------------------------------------------------------------

@dataclass
class Draft:
    """A task before it is grounded: steps as ``(description, tool, input)``; ``answer`` is a
    string, or a function of the evidence ``{var: text}`` (None: no solver row)."""

    intent: str
    template: str
    text: str
    steps: list[tuple[str, str, str]]
    answer: str | Callable[[dict], str] | None
    entities: tuple[str, ...] = ()


def _first_row(evidence: str) -> str:
    """The first data row of a ``query_sql`` table (header, rows, ``(n rows)``)."""
    lines = [ln for ln in evidence.splitlines() if ln.strip()]
    return lines[1].strip() if len(lines) > 2 else ""


def _rows(evidence: str) -> list[str]:
    lines = [ln.strip() for ln in evidence.splitlines() if ln.strip()]
    return lines[1:-1] if len(lines) > 2 else []


def _clock_parts(evidence: str) -> dict:
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)([+-]\d\d:\d\d|Z)? \((\w+), ([^)]+)\)", evidence.strip())
    if not m:
        return {}
    y, mo, d, hh, mm, _, _, wd, zone = m.groups()
    return {"date": f"{y}-{mo}-{d}", "time": f"{hh}:{mm} {zone}", "weekday": wd, "year": y}


WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def open_word_bank(world: World) -> list[str]:
    """The encyclopedia's lower-case words of 3-12 letters, sorted (deterministic): the stuff of
    :class:`Intents`' open values."""
    return sorted({w for text in world.wiki.values() for w in re.findall(r"\b[a-z]{3,12}\b", text)})


class Intents:
    """Every intent the default planner learns; each method returns one :class:`Draft`."""

    def __init__(self, world: World, rng: random.Random, values: random.Random | None = None):
        self.w, self.rng = world, rng
        # Open values (DemoConfig.open_values): file names and texts to save from the encyclopedia's
        # words, drawn by a generator of their own, so the tasks drawn stay the same and only the values
        # differ. None: the short closed lists below, which the planner learned by heart ("casino.txt"
        # written "casine.txt", "meeting moved to Friday" written "meeting") rather than to copy.
        self.values = values
        self.bank = open_word_bank(world) if values is not None else []
        self.ascii_films = [f for f in world.films if f["title"].isascii()]
        self.by_director: dict[str, list[dict]] = {}
        for f in world.films:
            self.by_director.setdefault(f["director"], []).append(f)

    def _pick(self, intent: str, templates: Sequence[str], **slots) -> tuple[str, str]:
        i = self.rng.randrange(len(templates))
        return f"{intent}:{i}", templates[i].format(**slots)

    # -- the film database (query_sql) ----------------------------------------------------------

    def film_director(self, more: Sequence[str] = ()) -> Draft:
        f = self.rng.choice(self.ascii_films)
        t = f["title"]
        tid, text = self._pick("film_director", [
            "Who directed the film {q}?", "Who is the director of {q}?", "Which filmmaker directed {q}?",
            "Tell me who directed the movie {q}.", "Who made the film {q}?", "{q} was directed by whom?",
            "Find the director of {q}.", "Name the director of the movie {q}.", "Who was behind the camera for {q}?",
            "I forgot who directed {q}. Who was it?", "director of {q}?", "Look up who directed {q}."] + list(more),
            q=_quote(t, self.rng))
        return Draft("film_director", tid, text,
                     [(f"Look up the director of {t} in the films table.", "query_sql",
                       f"SELECT director FROM films WHERE title = {_sql_str(t)}")], f["director"], (t,))

    def director_films(self, more: Sequence[str] = ()) -> Draft:
        f = self.rng.choice([f for f in self.ascii_films if len(self.by_director[f["director"]]) > 1])
        t = f["title"]
        tid, text = self._pick("director_films", [
            "What movies did the director of {q} direct? List one of them.", "Name a film made by the director of {q}.",
            "Which other films did the director of {q} make? Give one.", "List one movie by the person who directed {q}.",
            "Give me another film from the director of {q}.", "What else did the director of {q} make?",
            "Recommend a movie by whoever directed {q}.", "I liked {q}. Name another film by its director.",
            "Which film by the same director as {q} should I watch?", "one more movie by the director of {q}?"] + list(more),
            q=_quote(t, self.rng))
        return Draft("director_films", tid, text,
                     [(f"List the films by the director of {t}.", "query_sql",
                       f"SELECT title FROM films WHERE director = (SELECT director FROM films WHERE title = {_sql_str(t)})")],
                     lambda ev, t=t: next((r for r in _rows(ev["#E1"]) if r != t), ""), (t,))

    def birth_year(self, more: Sequence[str] = (), intent: str = "birth_year",
                   templates: Sequence[str] | None = None) -> Draft:
        d = self.rng.choice(self.w.directors)
        n = d["name"]
        tid, text = self._pick(intent, templates or [
            "When was {n} born?", "In which year was the director {n} born?", "What is the birth year of {n}?",
            "How old is {n}? Give the birth year.", "What year was {n} born in?", "{n}'s birth year?",
            "Tell me the year {n} was born.", "Look up when the filmmaker {n} was born.",
            "Birth year of the director {n}, please.", "Find out when {n} was born."] + list(more), n=n)
        return Draft(intent, tid, text,
                     [(f"Look up the birth year of {n}.", "query_sql",
                       f"SELECT birth_year FROM directors WHERE name = {_sql_str(n)}")], d["birth_year"], (n,))

    def birthplace(self, more: Sequence[str] = ()) -> Draft:
        d = self.rng.choice(self.w.directors)
        n = d["name"]
        tid, text = self._pick("birthplace", [
            "Where was {n} born?", "What is the birthplace of {n}?", "In which city was {n} born?",
            "Where does the director {n} come from?", "Find the birthplace of the filmmaker {n}.",
            "Tell me where {n} was born.", "{n} was born where?", "Look up the hometown of {n}."] + list(more), n=n)
        return Draft("birthplace", tid, text,
                     [(f"Look up where {n} was born.", "query_sql",
                       f"SELECT birthplace FROM directors WHERE name = {_sql_str(n)}")], d["birthplace"], (n,))

    def film_year(self, more: Sequence[str] = ()) -> Draft:
        f = self.rng.choice(self.ascii_films)
        t = f["title"]
        tid, text = self._pick("film_year", [
            "When was {q} released?", "What year did {q} come out?", "In which year was the film {q} released?",
            "Release year of {q}?", "Tell me when the movie {q} came out.", "How old is the film {q}? Give its year.",
            "Find the release year of {q}.", "{q} came out in which year?"] + list(more), q=_quote(t, self.rng))
        return Draft("film_year", tid, text,
                     [(f"Look up the release year of {t}.", "query_sql",
                       f"SELECT year FROM films WHERE title = {_sql_str(t)}")], f["year"], (t,))

    def count_films(self, more: Sequence[str] = ()) -> Draft:
        d = self.rng.choice(self.w.directors)
        n = d["name"]
        count = str(sum(f["director"] == n for f in self.w.films))
        tid, text = self._pick("count_films", [
            "How many films by {n} are in the database?", "Count the movies directed by {n}.",
            "How many of {n}'s films does the film database list?", "Number of films by {n} in the database?",
            "How many movies did {n} direct, according to the database?", "Tell me how many films {n} has in the table."] + list(more),
            n=n)
        return Draft("count_films", tid, text,
                     [(f"Count the films by {n}.", "query_sql",
                       f"SELECT COUNT(*) FROM films WHERE director = {_sql_str(n)}")], count, (n,))

    # -- the encyclopedia (search_wiki) ---------------------------------------------------------

    def wiki_about(self) -> Draft:
        title = self.rng.choice(list(self.w.wiki))
        name = title.split(" (")[0]
        tid, text = self._pick("wiki_about", [
            "Tell me about {x}.", "What is {x}?", "Look up {x} in the encyclopedia.", "Give me a short description of {x}.",
            "Search the encyclopedia for {x}.", "What do you know about {x}?", "Explain briefly what {x} is.",
            "Find information on {x}.", "who or what is {x}?", "Describe {x} in one sentence."], x=name)
        return Draft("wiki_about", tid, text, [(f"Search the encyclopedia for {name}.", "search_wiki", name)],
                     _first_sentence(self.w.wiki[title]), (name,))

    # How person_born asks; born_shared asks the film database's directors the same way.
    PERSON_BORN = ["When was {n} born?", "In what year was {n} born?", "What is the birth year of {n}?",
                   "Find out when {n} was born.", "{n} was born in which year?", "Tell me the year of birth of {n}."]

    def person_born(self) -> Draft:
        name, (born, _) = self.rng.choice(sorted(self.w.people.items()))
        tid, text = self._pick("person_born", self.PERSON_BORN, n=name)
        return Draft("person_born", tid, text, [(f"Search the encyclopedia for {name}.", "search_wiki", name)],
                     born, (name,))

    def person_died(self) -> Draft:
        name, (_, died) = self.rng.choice(sorted(self.w.people.items()))
        tid, text = self._pick("person_died", [
            "When did {n} die?", "In which year did {n} die?", "What year did {n} pass away?",
            "Find the year of death of {n}.", "{n} died in what year?"], n=name)
        return Draft("person_died", tid, text, [(f"Search the encyclopedia for {name}.", "search_wiki", name)],
                     died, (name,))

    def company_founded(self) -> Draft:
        name, year = self.rng.choice(sorted(self.w.companies.items()))
        tid, text = self._pick("company_founded", [
            "When was {c} founded?", "In which year was {c} founded?", "What year was {c} started?",
            "How old is the company {c}? Give its founding year.", "Find the founding year of {c}.",
            "{c} was founded when?"], c=name)
        return Draft("company_founded", tid, text, [(f"Search the encyclopedia for {name}.", "search_wiki", name)],
                     year, (name,))

    def capital(self) -> Draft:
        country, city = self.rng.choice(sorted(self.w.capitals.items()))
        tid, text = self._pick("capital", [
            "What is the capital of {c}?", "Which city is the capital of {c}?", "Name the capital city of {c}.",
            "{c}'s capital?", "Tell me the capital of {c}.", "What's {c}'s capital city?"], c=country)
        return Draft("capital", tid, text, [(f"Search the encyclopedia for {country}.", "search_wiki", country)],
                     city, (country,))

    def founder(self) -> Draft:
        name, who = self.rng.choice(sorted(self.w.founders.items()))
        tid, text = self._pick("founder", [
            "Who founded {c}?", "Who were the founders of {c}?", "Who started the company {c}?",
            "Tell me who founded {c}.", "{c} was founded by whom?", "Name the founders of {c}."], c=name)
        return Draft("founder", tid, text, [(f"Search the encyclopedia for {name}.", "search_wiki", name)],
                     who, (name,))

    # -- arithmetic (calculator) and code (python_interpreter) ----------------------------------

    def arithmetic(self) -> Draft:
        r = self.rng
        kind = r.randrange(6)
        if kind == 0:
            a, b = r.randint(2, 9999), r.randint(2, 999)
            word, sym = r.choice([("plus", "+"), ("minus", "-"), ("times", "*"), ("multiplied by", "*"), ("divided by", "/")])
            expr = f"{a} {sym} {b}"
            tid, text = self._pick("arithmetic", [
                "What is {a} {w} {b}?", "Compute {a} {s} {b}.", "How much is {a} {s} {b}?", "Calculate {a} {w} {b}.",
                "{a} {s} {b} = ?", "what's {a} {w} {b}", "Work out {a} {s} {b} for me.", "Evaluate {a} {s} {b}."],
                a=a, b=b, w=word, s=sym)
        elif kind == 1:
            p, x = r.choice([5, 10, 12, 15, 20, 25, 30, 75]), r.randint(20, 5000)
            expr = f"{x} * {p} / 100"
            tid, text = self._pick("arithmetic", ["What is {p}% of {x}?", "Compute {p} percent of {x}.",
                                                  "How much is {p}% of {x}?", "{p}% of {x}?"], p=p, x=x)
        elif kind == 2:
            a = r.randint(2, 60) ** 2
            expr = f"sqrt({a})"
            tid, text = self._pick("arithmetic", ["What is the square root of {a}?", "Compute the square root of {a}.",
                                                  "sqrt of {a}?", "Find the square root of {a}."], a=a)
        elif kind == 3:
            a, b = r.randint(2, 12), r.randint(2, 12)
            expr = f"{a} ** {b}"
            tid, text = self._pick("arithmetic", ["What is {a} to the power of {b}?", "Compute {a}^{b}.",
                                                  "How much is {a} raised to the {b}th power?", "{a}**{b} = ?"], a=a, b=b)
        elif kind == 4:
            a, b, c = r.randint(2, 500), r.randint(2, 500), r.randint(2, 20)
            expr = f"({a} + {b}) * {c}"
            tid, text = self._pick("arithmetic", ["What is ({a} + {b}) * {c}?", "Add {a} and {b}, then multiply by {c}.",
                                                  "Compute ({a}+{b})*{c}.", "Calculate the sum of {a} and {b} times {c}."],
                                   a=a, b=b, c=c)
        else:
            n = r.randint(3, 12)
            expr = f"factorial({n})"
            tid, text = self._pick("arithmetic", ["What is {n} factorial?", "Compute {n}!.", "Calculate the factorial of {n}.",
                                                  "How much is {n}!?"], n=n)
        return self._calc_draft(tid, text, expr)

    @staticmethod
    def _calc_draft(tid: str, text: str, expr: str) -> Draft:
        """One calculator step; the answer is its output."""
        return Draft("arithmetic", tid, text, [(f"Calculate {expr}.", "calculator", expr)],
                     lambda ev: ev["#E1"].strip())

    def python(self) -> Draft:
        r = self.rng
        kind = r.randrange(8)
        if kind == 0:
            n = r.choice([50, 100, 200, 500, 1000])
            code = f"print(sum(1 for k in range(2, {n}) if all(k % d for d in range(2, int(k ** 0.5) + 1))))"
            tid, goal = self._pick(f"python:{kind}", ["How many prime numbers are there below {n}?", "Count the primes smaller than {n}.",
                             "Use Python to count the primes under {n}."], n=n)
        elif kind == 1:
            s = r.choice(["hello world", "rewoo", "planner", "stressed", "a man a plan", "Python", "level up"])
            code = f"print({s!r}[::-1])"
            tid, goal = self._pick(f"python:{kind}", ["Reverse the string '{s}'.", "What is '{s}' spelled backwards?",
                             "Write '{s}' backwards using Python."], s=s)
        elif kind == 2:
            nums = [r.randint(1, 99) for _ in range(r.randint(4, 7))]
            code = f"print(sorted({nums}))"
            tid, goal = self._pick(f"python:{kind}", ["Sort these numbers: {l}.", "Put {l} in ascending order.",
                             "Use Python to sort {l}."], l=", ".join(map(str, nums)))
        elif kind == 3:
            n = r.randint(5, 40)
            code = f"print(sum(k * k for k in range(1, {n + 1})))"
            tid, goal = self._pick(f"python:{kind}", ["What is the sum of the squares of 1 to {n}?", "Add up the squares from 1 to {n}.",
                             "Compute 1^2 + 2^2 + ... + {n}^2 with Python."], n=n)
        elif kind == 4:
            n = r.randint(5, 30)
            code = f"print(round(((1 + 5 ** 0.5) / 2) ** {n} / 5 ** 0.5))"
            tid, goal = self._pick(f"python:{kind}", ["What is the {n}th Fibonacci number?", "Compute Fibonacci number {n}.",
                             "Use Python to find the {n}th Fibonacci number."], n=n)
        elif kind == 5:
            s = r.choice(["The quick brown fox", "Large language models plan", "Evidence before answers", "banana"])
            code = f"print(sum(c in 'aeiouAEIOU' for c in {s!r}))"
            tid, goal = self._pick(f"python:{kind}", ["How many vowels are in '{s}'?", "Count the vowels in the text '{s}'.",
                             "Use Python to count vowels in '{s}'."], s=s)
        elif kind == 6:
            a = datetime(2024, 1, 1) + timedelta(days=r.randrange(900))
            b = a + timedelta(days=r.randint(3, 400))
            code = f"from datetime import date; print((date({b.year}, {b.month}, {b.day}) - date({a.year}, {a.month}, {a.day})).days)"
            tid, goal = self._pick(f"python:{kind}", ["How many days are there between {a} and {b}?", "Count the days from {a} to {b}.",
                             "Use Python to compute the number of days between {a} and {b}."], 
                a=a.date().isoformat(), b=b.date().isoformat())
        else:
            nums = [r.randint(1, 200) for _ in range(r.randint(4, 8))]
            code = f"import statistics; print(statistics.mean({nums}))"
            tid, goal = self._pick(f"python:{kind}", ["What is the average of {l}?", "Compute the mean of {l}.",
                             "Use Python to average {l}."], l=", ".join(map(str, nums)))
        return Draft("python", tid, goal, [("Run Python code to compute it.", "python_interpreter", code)],
                     lambda ev: ev["#E1"].strip().splitlines()[0] if ev["#E1"].strip() else "")

    # -- the clock --------------------------------------------------------------------------------

    CLOCK_ASKS = {  # what get_current_time's evidence answers: part -> phrasings asking for it
        "time": ["What time is it now?", "What time is it?", "Tell me the current time.", "What's the time right now?",
                 "Can you check the clock?", "current time?", "Do you know what time it is?", "Give me the time."],
        "date": ["What is the date today?", "What's today's date?", "Which date is it today?", "Tell me today's date.",
                 "today's date?", "What day of the month is it?"],
        "weekday": ["What day of the week is it?", "Which weekday is it today?", "Is it Monday today? Tell me the weekday.",
                    "What day is it today?"],
        "year": ["What year is it?", "Which year are we in?", "Tell me the current year."],
    }

    def clock(self) -> Draft:
        part, templates = self.rng.choice(list(self.CLOCK_ASKS.items()))
        tid, text = self._pick(f"clock_{part}", templates)
        return self._clock_draft(tid, text, part)

    @staticmethod
    def _clock_draft(tid: str, text: str, part: str) -> Draft:
        """One get_current_time step; the answer is ``part`` (time, date, weekday, year) of its evidence."""
        return Draft("clock", tid, text, [("Read the current date and time.", "get_current_time", "")],
                     lambda ev: _clock_parts(ev["#E1"]).get(part, ""))

    # -- saving files ---------------------------------------------------------------------------

    def _path(self) -> str:
        stem = self.rng.choice(["hello", "notes", "result", "answer", "todo", "report", "summary", "greeting",
                                "out", "memo", "draft", "log", "data", "info", "reminder"])
        ext = self.rng.choice([".txt", ".txt", ".md", ".csv", ".json"])
        sub = self.rng.choice(["", "", "", "notes/", "docs/", "out/"])
        if self.values is not None:
            stem, sub = self.open_stem(), self.values.choice(["", "", "", "", "notes/", "docs/", "out/",
                                                              f"{self.values.choice(self.bank)}/"])
        return f"{sub}{stem}{ext}"

    def open_stem(self) -> str:
        """A file name's stem made of the encyclopedia's words: "harbor", "trip_plan", "Budget-2031"."""
        v, words = self.values, self.bank
        a, b = v.choice(words), v.choice(words)
        return v.choice([a, a, f"{a}_{b}", f"{a}-{b}", f"{a}{v.randint(1, 2099)}", a.capitalize(),
                         f"{a.capitalize()}-{v.randint(1, 99)}"])

    def open_text(self) -> str:
        """A text to save made of the encyclopedia's words: a phrase, a list, a time, a number."""
        v, words = self.values, self.bank
        some = [v.choice(words) for _ in range(v.randint(2, 6))]
        kind = v.randrange(6)
        if kind == 0:
            return " ".join(some).capitalize()
        if kind == 1:
            return ", ".join(some[:v.randint(2, 4)])
        if kind == 2:
            when = v.choice([f"at {v.randint(1, 12)}{v.choice(['am', 'pm', ''])}", f"on {v.choice(WEEKDAYS)}",
                             f"by {v.choice(MONTHS)} {v.randint(1, 28)}", "tomorrow", "next week"])
            return f"{' '.join(some[:3]).capitalize()} {when}"
        if kind == 3:
            return f"{some[0]} {v.randint(1, 99999)}"
        if kind == 4:
            return v.choice(words)
        return " ".join(some).capitalize() + "."

    def _saved_text(self, closed: Sequence[str]) -> str:
        """A text to save: one of ``closed``, or with open values :meth:`open_text` (``closed`` is
        drawn from either way, so the tasks drawn after it stay the same)."""
        content = self.rng.choice(closed)
        return self.open_text() if self.values is not None else content

    def _save_given(self, intent: str, content: Callable[[], str], templates: Sequence[str]) -> Draft:
        """A text saved as the task gives it: a path, then ``content()``, then one of ``templates``
        (slots ``{c}`` and ``{p}``), drawn in that order."""
        path = self._path()
        text_to_save = content()
        tid, text = self._pick(intent, templates, c=text_to_save, p=path)
        return self._save_draft(tid, text, path, text_to_save)

    def save_text(self) -> Draft:
        return self._save_given("save_text", lambda: self._saved_text([
            "hello", "hello world", "Meeting at 10am", "buy milk", "The plan works.", "42", "Remember to call Anna",
            "Draft v2 is ready", "ok", "done", "ReWOO plans first", "See you tomorrow"]), [
            "Save the text '{c}' to {p}.", "Write '{c}' into the file {p}.", "Create a file named {p} containing '{c}'.",
            "Store '{c}' in {p}.", "Put the words '{c}' in a file called {p}.", "save '{c}' as {p}",
            "Make a file {p} that says '{c}'.", "Please write {p} with the content '{c}'."])

    @staticmethod
    def _save_draft(tid: str, text: str, path: str, content: str) -> Draft:
        """One save_file step writing ``content`` to ``path``."""
        return Draft("save_text", tid, text, [(f"Save the text to {path}.", "save_file", f"path={path}, content={content}")],
                     f"Saved to {path}.", (content, path))

    # -- services that need the network (offline they say they are not configured) ---------------

    def web(self) -> Draft:
        topic = self.rng.choice(["the weather in Paris", "bitcoin's price", "the latest iPhone", "election results",
                                 "today's football scores", "Nvidia stock", "the newest Python release",
                                 "flights to Tokyo", "traffic in Berlin", "the next solar eclipse",
                                 "concerts in London this week", "the price of gold"])
        tid, text = self._pick("web", [
            "Search the web for {x}.", "What is the latest news about {x}?", "Look up {x} online.",
            "Find recent information on {x}.", "google {x}", "What's new with {x}? Check the internet.",
            "Check the web for {x} today."], x=topic)
        return self._web_draft(tid, text, topic)

    @staticmethod
    def _web_draft(tid: str, text: str, topic: str) -> Draft:
        """One search_web step; offline the answer says why the search failed."""
        return Draft("web", tid, text, [(f"Search the web for {topic}.", "search_web", topic)],
                     lambda ev: f"I could not search the web: {_error_reason(ev['#E1'])}", (topic,))

    def bilibili(self) -> Draft:
        kw = self.rng.choice(["Genshin Impact", "Hatsune Miku", "One Piece", "Minecraft speedrun", "Chinese cooking",
                              "Black Myth Wukong", "lofi music", "Demon Slayer", "guitar lessons", "cat videos"])
        tid, text = self._pick("bilibili", [
            "Find videos about {k} on Bilibili.", "Search bilibili for {k}.", "Are there Bilibili videos on {k}?",
            "Show me {k} videos from bilibili.", "Look up {k} on Bilibili.", "bilibili {k} videos please"], k=kw)
        return Draft("bilibili", tid, text, [(f"Search Bilibili for {kw}.", "search_bilibili", kw)],
                     lambda ev: f"I could not search Bilibili: {_error_reason(ev['#E1'])}", (kw,))

    # -- the llm tool ---------------------------------------------------------------------------

    def llm(self) -> Draft:
        kind = self.rng.randrange(4)
        if kind == 0:
            phrase = self.rng.choice(["good morning", "thank you", "where is the station", "I love cats", "see you soon"])
            lang = self.rng.choice(["French", "Spanish", "German", "Italian", "Chinese"])
            tid, goal = self._pick(f"llm:{kind}", ["Translate '{p}' into {l}.", "How do you say '{p}' in {l}?",
                                    "Give me the {l} for '{p}'."], p=phrase, l=lang)
            prompt = f"Translate '{phrase}' into {lang}."
        elif kind == 1:
            topic = self.rng.choice(["autumn", "the sea", "coffee", "a robot", "rain", "mountains"])
            tid, goal = self._pick(f"llm:{kind}", ["Write a haiku about {t}.", "Compose a short poem about {t}.",
                                    "Write two lines of verse about {t}."], t=topic)
            prompt = f"Write a short poem about {topic}."
        elif kind == 2:
            word = self.rng.choice(["happy", "fast", "big", "smart", "quiet", "brave"])
            tid, goal = self._pick(f"llm:{kind}", ["Give me a synonym for '{w}'.", "What is another word for {w}?",
                                    "Suggest a synonym of {w}."], w=word)
            prompt = f"Give one synonym for the word '{word}'."
        else:
            what = self.rng.choice(["a birthday message for my sister", "a polite reminder about a meeting",
                                    "a slogan for a bakery", "a title for a blog post about hiking"])
            tid, goal = self._pick(f"llm:{kind}", ["Write {x}.", "Draft {x}.", "Come up with {x}."], x=what)
            prompt = f"Write {what}."
        return Draft("llm", tid, goal, [("Ask the language model.", "llm", prompt)],
                     lambda ev: ev["#E1"].strip())

    # -- chains ---------------------------------------------------------------------------------

    def lookup_then_save(self) -> Draft:
        inner = self.rng.choice([self.film_director, self.birth_year, self.film_year, self.arithmetic,
                                 self.python, self.clock, self.wiki_about])()
        path = self._path()
        goal = inner.text.rstrip("?.!")
        tid, text = self._pick("lookup_then_save", [
            "{g} and save it to {p}.", "{g}, then write the answer to {p}.", "{g}. Save the result in {p}.",
            "Find out: {g}. Store it in {p}.", "{g} and put the answer into the file {p}."], g=goal, p=path)
        return self._then_save("lookup_then_save", tid, text, inner, path)

    @staticmethod
    def _then_save(intent: str, tid: str, text: str, inner: Draft, path: str) -> Draft:
        """``inner``'s plan with a last step that saves its evidence to ``path``."""
        steps = inner.steps + [(f"Save the result to {path}.", "save_file", f"path={path}, content=#E{len(inner.steps)}")]
        return Draft(intent, tid, text, steps, inner.answer, inner.entities + (path,))

    def calc_chain(self) -> Draft:
        a, b, c = self.rng.randint(2, 300), self.rng.randint(2, 300), self.rng.randint(2, 50)
        op, word = self.rng.choice([("+", "add"), ("*", "multiply it by"), ("-", "subtract")])
        tid, text = self._pick("calc_chain", [
            "Compute {a} * {b}, then {w} {c}.", "First multiply {a} by {b}; then {w} {c}.",
            "Calculate {a} times {b} and then {w} {c}."], a=a, b=b, c=c, w=word)
        return Draft("calc_chain", tid, text,
                     [(f"Multiply {a} by {b}.", "calculator", f"{a} * {b}"),
                      (f"Apply {op} {c} to the product.", "calculator", f"#E1 {op} {c}")],
                     lambda ev: ev["#E2"].strip())

    def wiki_then_llm(self) -> Draft:
        title = self.rng.choice(list(self.w.wiki))
        name = title.split(" (")[0]
        tid, text = self._pick("wiki_then_llm", [
            "Look up {x} and summarize it in one sentence.", "Search the encyclopedia for {x}, then give a one-line summary.",
            "Find {x} in the encyclopedia and explain it simply.", "Research {x} and write a short summary."], x=name)
        return self._summarised("wiki_then_llm", tid, text, name)

    @staticmethod
    def _summarised(intent: str, tid: str, text: str, name: str) -> Draft:
        """Search the encyclopedia for ``name``, then summarise what was found in one sentence."""
        return Draft(intent, tid, text,
                     [(f"Search the encyclopedia for {name}.", "search_wiki", name),
                      ("Summarize what was found in one sentence.", "llm", "Summarize in one sentence: #E1")],
                     lambda ev: ev["#E2"].strip(), (name,))

    def compare_births(self, more: Sequence[str] = ()) -> Draft:
        a, b = self.rng.sample(self.w.directors, 2)
        older = a["name"] if int(a["birth_year"]) <= int(b["birth_year"]) else b["name"]
        tid, text = self._pick("compare_births", [
            "Who is older, {a} or {b}?", "Which director was born first: {a} or {b}?",
            "Was {a} born before {b}? Name the older one.", "Between {a} and {b}, who was born earlier?"] + list(more),
            a=a["name"], b=b["name"])
        return Draft("compare_births", tid, text,
                     [(f"Look up the birth year of {a['name']}.", "query_sql",
                       f"SELECT birth_year FROM directors WHERE name = {_sql_str(a['name'])}"),
                      (f"Look up the birth year of {b['name']}.", "query_sql",
                       f"SELECT birth_year FROM directors WHERE name = {_sql_str(b['name'])}")],
                     older, (a["name"], b["name"]))

    # -- more two-step tasks (DemoConfig.chain_rows: CHAIN_MIX, many more phrasings) --------------

    def save_chain(self) -> Draft:
        inner = self.rng.choice([self.film_director, self.birth_year, self.birthplace, self.film_year, self.count_films,
                                 self.person_born, self.person_died, self.capital, self.founder, self.company_founded,
                                 self.arithmetic, self.python, self.clock])()
        path = self._path()
        q = inner.text.strip()
        g = q.rstrip("?.!")
        tid, text = self._pick("save_chain", [
            "{q} Save the answer to {p}.", "{q} Then write it into {p}.", "{q} Put the result in {p}, please.",
            "{q} Also store that in the file {p}.", "{g}, and record the answer in {p}.", "{g}; save that to {p}.",
            "{g} -- write the answer to the file {p}.", "Answer this and keep the answer in {p}: {q}",
            "{g}. When you have it, save it as {p}.", "{q} I want the answer written to {p}.",
            "{g}, then put that into {p}.", "{q} Store the result in {p}."], q=q, g=g, p=path)
        return self._then_save("save_chain", tid, text, inner, path)

    def summary_chain(self) -> Draft:
        title = self.rng.choice(list(self.w.wiki))
        name = title.split(" (")[0]
        tid, text = self._pick("summary_chain", [
            "Read the encyclopedia entry on {x} and give me a one-line summary.",
            "What does the encyclopedia say about {x}? Summarize it in a sentence.",
            "Summarize the encyclopedia article about {x} briefly.",
            "Get the encyclopedia text for {x}, then boil it down to one sentence.",
            "Briefly summarize what the encyclopedia has on {x}.", "{x}: look it up and give me the gist.",
            "I need a one-sentence summary of {x} from the encyclopedia.",
            "Find {x} in the encyclopedia and condense it into a short summary.",
            "Check the encyclopedia for {x} and tell me the main point in one line.",
            "Look {x} up, then write a two-line summary of it."], x=name)
        return self._summarised("summary_chain", tid, text, name)

    # -- wider shapes and phrasings (DemoConfig.wide_rows: WIDE_MIX, planner rows only) -----------
    # Written after v13's hand-written results by kind (Python 2/6, `llm` 1/4, encyclopedia
    # questions that are not "tell me about X" sent to the film database): new task shapes for
    # those tools, in new words. None of them copies an evaluation task or its wording, and
    # wiki_question never asks about an article an evaluation task names.

    FILM_MORE = {
        "film_director": ["Do you know who directed {q}?", "Whose film is {q}?", "Who helmed {q}?",
                          "Which director shot {q}?", "The movie {q}: who was its director?",
                          "Check the film database: who directed {q}?", "who directed {q} again",
                          "Can you tell me the name of the person who directed {q}?"],
        "director_films": ["Show me a different movie by the director of {q}.",
                           "I enjoyed {q}. What else has its director made?",
                           "Which films share a director with {q}? Name one.",
                           "Suggest something else directed by the person who made {q}.",
                           "List another title by the director of {q}."],
        "birth_year": ["What year was the director {n} born?", "Which year is {n}'s birth year?",
                       "Look up {n}'s year of birth in the film database.", "Born when: {n}?",
                       "How long ago was {n} born? Just the year.", "{n} was born in what year?"],
        "birthplace": ["Which city does {n} come from?", "What's the hometown of {n}?",
                       "Where is the director {n} from?", "{n}'s place of birth?",
                       "In what place was {n} born?", "Check where the filmmaker {n} was born."],
        "film_year": ["What year did {q} premiere?", "When did {q} first come out in cinemas?",
                      "Which year did the film {q} open?", "{q}: what's its release year?",
                      "How many years ago did {q} come out? Give the year.", "Year of release for {q}?"],
        "count_films": ["How many titles by {n} does the database hold?", "Count {n}'s films in the database.",
                        "How many {n} films are listed?", "What is the number of movies directed by {n} in the table?"],
        "compare_births": ["Whose birthday comes first, {a} or {b}?", "{a} vs {b}: who is the elder?",
                           "Of {a} and {b}, which one was born earlier?", "Tell me which is older: {a} or {b}."],
    }

    # -- focused rows (DemoConfig.focus_rows: FOCUS_MIX, planner rows only) ----------------------
    # Written after v14's results: "When was <director> born?" went to the encyclopedia for all
    # four in-distribution directors. person_born asks its 19 people in 6 phrasings (~5 rows each,
    # search_wiki) while birth_year spreads its directors over 16 (~2 rows each, query_sql), so the
    # phrasing said "encyclopedia" 5:2 and the name was left to decide against it.

    def born_shared(self) -> Draft:
        """A director of the film database asked in person_born's phrasings: the same words, the
        other tool; only the name tells them apart."""
        return self.birth_year(intent="born_shared", templates=self.PERSON_BORN)

    # -- film rows (DemoConfig.films_rows: FILMS_MIX, planner rows only) ------------------------
    # Written after v15's results: "What movies did the director of X direct?" planned
    # "SELECT director ..." (films-0..3, sql-10, sql-11: 6 exact answers lost), since ~64 plans
    # look a director up by title against ~27 that list the films by the director of a title.

    def director_films_any(self) -> Draft:
        """director_films in its base and its wider phrasings."""
        return self.director_films(more=self.FILM_MORE["director_films"])

    def count_films_any(self) -> Draft:
        """count_films in its base and its wider phrasings."""
        return self.count_films(more=self.FILM_MORE["count_films"])

    def film_wide(self) -> Draft:
        """A film-database intent in phrasings the base intents do not use."""
        name = self.rng.choice(sorted(self.FILM_MORE))
        return getattr(self, name)(more=self.FILM_MORE[name])

    WIKI_QUESTIONS = {
        "geography": ["Where is {x}?", "How big is {x}?", "What is {x} known for?", "Give me a few facts about {x}.",
                      "Which part of the world is {x} in?", "Is {x} worth visiting? What is it like?",
                      "what's special about {x}", "Tell me something interesting about {x}.",
                      "How large is {x}, roughly?", "Describe the geography of {x}."],
        "history": ["What happened during {x}?", "When did {x} take place?", "Who was involved in {x}?",
                    "Why does {x} matter in history?", "Give me the background of {x}.", "How did {x} end?",
                    "What was the result of {x}?", "Explain {x} in a few words.", "who took part in {x}",
                    "What led to {x}?"],
        "science": ["How does {x} work?", "Who discovered {x}?", "Explain {x} in simple terms.",
                    "What is the idea behind {x}?", "Why is {x} important?", "Can you break down {x} for me?",
                    "what is {x} all about", "Who came up with {x}?", "Give me the basics of {x}.",
                    "I keep hearing about {x}. What is it?"],
        "people": ["Who was {x}?", "What is {x} famous for?", "Why is {x} well known?",
                   "What did {x} achieve?", "Give me a short biography of {x}.", "What was {x}'s main work?",
                   "who is {x}", "Tell me the life story of {x} in brief.", "Where was {x} from?",
                   "What is {x} remembered for?"],
        "companies": ["What does {x} make?", "What is {x}'s business?", "Where is {x} based?",
                      "Who runs {x}?", "What kind of company is {x}?", "How did {x} get started?",
                      "Give me a quick profile of the company {x}.", "what does {x} do", "Who owns {x}?",
                      "Is {x} a big company? What does it sell?"],
    }

    @cached_property
    def wiki_topics(self) -> list[tuple[str, str]]:
        """``(kind, title)`` of the articles wiki_question asks about: every article of the
        WIKI_QUESTIONS kinds except those an evaluation task names."""
        named = " " + " ".join(sorted(eval_texts())) + " "
        return sorted((kind, title) for title, kind in self.w.kinds.items() if kind in self.WIKI_QUESTIONS
                      and f" {normalise(title.split(' (')[0])} " not in named)

    def wiki_question(self) -> Draft:
        """A question about an encyclopedia article that is not "tell me about X": places, events,
        ideas, people and companies outside the film database (planner rows only: no answer)."""
        kind, title = self.rng.choice(self.wiki_topics)
        name = title.split(" (")[0]
        tid, text = self._pick(f"wiki_question:{kind}", self.WIKI_QUESTIONS[kind], x=name)
        return Draft("wiki_question", tid, text, [(f"Search the encyclopedia for {name}.", "search_wiki", name)],
                     None, (name,))

    # Ways of saying "with code", around a python_wide goal.
    CODE_ASKS = ["{g}", "{g}", "{g}", "Using Python, {gl}.", "Write a quick script: {gl}.", "{g} Use code.",
                 "With a bit of code, {gl}.", "Run a program for this: {gl}.", "{g} (compute it with Python)",
                 "Code this for me: {gl}."]

    def python_wide(self) -> Draft:
        """Small computations a calculator cannot do, in new shapes and phrasings."""
        r = self.rng
        kind = r.randrange(12)
        if kind == 0:
            nums = r.sample(range(1, 500), r.randint(4, 7))
            big = r.random() < 0.5
            code = f"print({'max' if big else 'min'}({nums}))"
            templates, slots = ["Which is the {w} of {l}?", "Find the {w} number in this list: {l}.",
                                "Out of {l}, which number is the {w}?", "Pick the {w} value from {l}."], dict(
                w="largest" if big else "smallest", l=", ".join(map(str, nums)))
        elif kind == 1:
            s = r.choice(["the early bird catches the worm", "plans come before evidence", "a small model can plan",
                          "tools answer questions", "every step has a tool", "the quick brown fox jumps"])
            code = f"print(len({s!r}.split()))"
            templates, slots = ["How many words are in '{s}'?", "Count the words of the sentence '{s}'.",
                                "Word count of '{s}'?", "Tell me the number of words in '{s}'."], dict(s=s)
        elif kind == 2:
            s = r.choice(["rewoo", "planner", "agent", "evidence", "tool call", "hello there"])
            code = f"print({s!r}.upper())"
            templates, slots = ["Convert '{s}' to upper case.", "Make '{s}' all capitals.", "Uppercase the text '{s}'.",
                                "Turn '{s}' into capital letters."], dict(s=s)
        elif kind == 3:
            s = r.choice(["mississippi", "banana", "bookkeeper", "assessment", "tennessee", "committee"])
            c = r.choice(sorted(set(s)))
            code = f"print({s!r}.count({c!r}))"
            templates, slots = ["How many times does the letter '{c}' appear in '{s}'?", "Count the '{c}'s in '{s}'.",
                                "In the word '{s}', how often is '{c}' used?", "Number of '{c}' letters in '{s}'?"], dict(c=c, s=s)
        elif kind == 4:
            n = r.randint(50, 5000)
            code = f"print({n} > 1 and all({n} % d for d in range(2, int({n} ** 0.5) + 1)))"
            templates, slots = ["Is {n} a prime number?", "Check whether {n} is prime.", "Tell me if {n} is prime or not.",
                                "is {n} prime"], dict(n=n)
        elif kind == 5:
            a, b = r.randint(12, 999), r.randint(12, 999)
            code = f"import math; print(math.gcd({a}, {b}))"
            templates, slots = ["What is the greatest common divisor of {a} and {b}?", "Find the GCD of {a} and {b}.",
                                "Largest number dividing both {a} and {b}?", "gcd({a}, {b}) = ?"], dict(a=a, b=b)
        elif kind == 6:
            n = r.randint(1000, 999999)
            code = f"print(sum(int(c) for c in str({n})))"
            templates, slots = ["What is the sum of the digits of {n}?", "Add up the digits in {n}.",
                                "Digit sum of {n}?", "Sum every digit of the number {n}."], dict(n=n)
        elif kind == 7:
            n = r.randint(5, 4000)
            code = f"print(bin({n})[2:])"
            templates, slots = ["Write {n} in binary.", "What is {n} in base 2?", "Convert {n} to binary.",
                                "Binary representation of {n}?"], dict(n=n)
        elif kind == 8:
            nums = [r.randint(1, 99) for _ in range(r.randint(4, 7))]
            down = r.random() < 0.5
            code = f"print(sorted({nums}{', reverse=True' if down else ''}))"
            templates, slots = ["Arrange {l} from {o}.", "List {l} in {w} order.", "Rank the numbers {l}, {o}.",
                                "Can you order {l} {o}?"], dict(
                l=", ".join(map(str, nums)), w="descending" if down else "increasing",
                o="highest to lowest" if down else "lowest to highest")
        elif kind == 9:
            s = r.choice(["machine learning", "function calling", "open weights", "agent", "evidence"])
            code = f"print(len({s!r}))"
            templates, slots = ["How many characters long is '{s}'?", "What is the length of the string '{s}'?",
                                "Count the characters in '{s}', spaces included."], dict(s=s)
        elif kind == 10:
            d = datetime(2020, 1, 1) + timedelta(days=r.randrange(3000))
            code = f"from datetime import date; print(date({d.year}, {d.month}, {d.day}).strftime('%A'))"
            templates, slots = ["What day of the week was {d}?", "Which weekday did {d} fall on?",
                                "On which day of the week did {d} land?", "Find the weekday of the date {d}."], dict(
                d=d.date().isoformat())
        else:
            nums = [r.randint(1, 100) for _ in range(r.choice([5, 7, 9]))]
            code = f"import statistics; print(statistics.median({nums}))"
            templates, slots = ["What is the median of {l}?", "Find the middle value of {l}.",
                                "Median of these numbers: {l}?"], dict(l=", ".join(map(str, nums)))
        tid, goal = self._pick(f"python_wide:{kind}", templates, **slots)
        ask = r.randrange(len(self.CODE_ASKS))
        text = self.CODE_ASKS[ask].format(g=goal, gl=goal[:1].lower() + goal[1:].rstrip("?.!"))
        return Draft("python_wide", f"{tid}/{ask}", text,
                     [("Run Python code to compute it.", "python_interpreter", code)],
                     lambda ev: ev["#E1"].strip().splitlines()[0] if ev["#E1"].strip() else "")

    def llm_wide(self) -> Draft:
        """Writing and language tasks for the `llm` tool, in new shapes and phrasings (nothing to look up)."""
        r = self.rng
        kind = r.randrange(7)
        if kind == 0:
            phrase = r.choice(["happy birthday", "how much is this", "nice to meet you", "I am hungry",
                               "where is the library", "have a good trip", "excuse me", "it is raining"])
            lang = r.choice(["Japanese", "Korean", "Portuguese", "Russian", "Dutch", "Arabic", "Hindi", "Swedish",
                                "Turkish", "Greek"])
            templates, slots = ["What is '{p}' in {l}?", "Put '{p}' into {l}, please.", "{l} translation of '{p}'?",
                                "Help me say '{p}' in {l}.", "Say '{p}' in {l}.", "I need '{p}' in {l}."], dict(p=phrase, l=lang)
            prompt = f"Translate '{phrase}' into {lang}."
        elif kind == 1:
            word = r.choice(["generous", "noisy", "early", "heavy", "bright", "simple", "rare", "polite", "cheap", "strong"])
            templates, slots = ["What is the opposite of '{w}'?", "Give me a word that means the opposite of {w}.",
                                "Opposite of {w}?", "Which word is the reverse of '{w}' in meaning?"], dict(w=word)
            prompt = f"Give one antonym of the word '{word}'."
        elif kind == 2:
            thing = r.choice(["a bakery", "a podcast about space", "a pet hamster", "a hiking club", "a board game cafe",
                              "a small bookshop", "a chess app", "a food truck", "a running team", "a tea brand"])
            templates, slots = ["Suggest a name for {t}.", "Brainstorm a good name for {t}.", "What should I call {t}?",
                                "Think up a fun name for {t}.", "I need a memorable name for {t}."], dict(t=thing)
            prompt = f"Suggest one name for {thing}."
        elif kind == 3:
            topic = r.choice(["a lazy dog", "the ocean", "winter mornings", "a lost umbrella", "spring rain", "a grumpy robot",
                              "a busy bee", "the night sky"])
            form = r.choice(["limerick", "haiku", "short poem", "four-line rhyme"])
            templates, slots = ["Write a {f} about {t}.", "Make up a {f} on {t}.", "I'd love a {f} about {t}.",
                                "Give me a {f} featuring {t}."], dict(f=form, t=topic)
            prompt = f"Write a {form} about {topic}."
        elif kind == 4:
            topic = r.choice(["computers", "cats", "coffee", "mathematicians", "the weather", "trains"])
            templates, slots = ["Tell me a joke about {t}.", "Do you know a good joke about {t}?", "Make me laugh: a joke about {t}.",
                                "a short pun about {t} please"], dict(t=topic)
            prompt = f"Tell a short joke about {topic}."
        elif kind == 5:
            s = r.choice(["send me the file now", "you are late again", "fix this bug today", "I want a refund",
                          "stop calling me"])
            templates, slots = ["Rewrite '{s}' so it sounds polite.", "Make this more friendly: '{s}'.",
                                "Rephrase '{s}' in a formal tone.", "How can I say '{s}' more nicely?"], dict(s=s)
            prompt = f"Rewrite politely: '{s}'."
        else:
            what = r.choice(["a team lunch", "a rainy Sunday", "a child's birthday party", "learning a language",
                                "saving money", "a weekend trip"])
            templates, slots = ["Give me three ideas for {w}.", "Any tips for {w}?", "Brainstorm some ideas for {w}.",
                                "What could I do for {w}? A few suggestions please."], dict(w=what)
            prompt = f"Give three short ideas for {what}."
        tid, goal = self._pick(f"llm_wide:{kind}", templates, **slots)
        # No answer: these are planner rows only, and the seeded stand-in (LLM_ANSWERS) knows none of them.
        return Draft("llm_wide", tid, goal, [("Ask the language model.", "llm", prompt)], None)

    # -- rare rows (DemoConfig.rare_rows: RARE_MIX, planner rows only) ---------------------------
    # Written after v19's hand-written misses by kind: plans that open on the clock, the web or
    # save_file are the fewest (25-30 each of ~1,230) and v19 sent such tasks in new words to
    # search_wiki, query_sql or llm; "2 to the 16th" went to llm; release years and directors'
    # birthplaces or ages in new words went to the encyclopedia. New phrasings and new values;
    # none copies an evaluation task (draw() also drops any text equal to one).

    CLOCK_MORE = {
        "time": ["Got the time?", "How late is it?", "Check the current time for me.", "what time is it right now",
                 "Tell me the exact time, please.", "Could you look at the clock and tell me the time?",
                 "I need the current time.", "time now?", "What does the clock say?", "Hours and minutes right now?"],
        "date": ["Which date is today?", "what is today", "Give me today's full date.", "Today's date, please.",
                 "What's the date right now?", "I lost track of the date. What is it?", "date today?",
                 "Can you tell me the date?"],
        "weekday": ["What weekday is today?", "Is today a weekday or the weekend? Which day is it?",
                    "Tell me the day of the week.", "which day of the week is today", "Remind me what day it is.",
                    "Remind me which weekday it is.", "Day of the week right now?", "Is it Friday yet? Tell me the weekday."],
        "year": ["Which year is it right now?", "What's the current year?", "Remind me what year it is.",
                 "year now?", "Tell me which year we are in.", "What year are we living in?"],
    }

    def clock_wide(self) -> Draft:
        """The clock in phrasings the base intent does not use."""
        part = self.rng.choice(sorted(self.CLOCK_MORE))
        tid, text = self._pick(f"clock_wide_{part}", self.CLOCK_MORE[part])
        return self._clock_draft(tid, text, part)

    WEB_NOW = {
        "city": (["the weather in {c} right now", "the current temperature in {c}", "today's forecast for {c}",
                  "the traffic in {c} at the moment", "events happening in {c} this weekend"],
                 ["Lisbon", "Toronto", "Nairobi", "Madrid", "Osaka", "Cairo", "Chicago", "Mumbai", "Oslo", "Lima"]),
        "coin": (["the price of {c} today", "{c}'s price right now", "the current {c} exchange rate",
                  "how {c} is trading today"],
                 ["bitcoin", "Solana", "Dogecoin", "Cardano", "Litecoin", "Ripple"]),
        "company": (["{c}'s share price today", "the latest news about {c}", "{c} stock right now",
                     "what analysts said about {c} this week"],
                    ["Apple", "Tesla", "Microsoft", "Amazon", "Samsung", "Toyota"]),
        "other": (["today's top headlines", "tonight's {c} results", "the latest {c} scores",
                   "the winner of yesterday's {c} match"],
                  ["basketball", "football", "baseball", "hockey", "tennis", "cricket"]),
    }

    def web_wide(self) -> Draft:
        """Current things (weather, prices, news, scores) asked in new words: only the web has them."""
        kind = self.rng.choice(sorted(self.WEB_NOW))
        shapes, fills = self.WEB_NOW[kind]
        topic = self.rng.choice(shapes).format(c=self.rng.choice(fills))
        tid, text = self._pick(f"web_wide:{kind}", [
            "What is {x}?", "Check {x} for me.", "Look up {x} on the internet.", "I need {x}. Search online.",
            "find {x} online", "Can you get me {x}?", "search the internet for {x}", "Please find out {x}.",
            "Tell me {x}; it has to be up to date.", "Do a web search: {x}.", "{X}? Check online.",
            "What does the web say about {x}?"], x=topic, X=topic[:1].upper() + topic[1:])
        return self._web_draft(tid, text, topic)

    SAVE_WORDS = ["pick up the kids at 4", "apples, rice, tea", "dentist on Tuesday", "water the plants",
                  "pay rent on the 1st", "gym at 7", "Project kickoff on Monday", "renew the passport",
                  "feed the cat", "backup finished", "Call the bank", "lunch with Sam at noon"]

    def save_wide(self) -> Draft:
        """Writing given text to a file, in phrasings the base intent does not use."""
        return self._save_given("save_wide", lambda: self._saved_text(self.SAVE_WORDS), [
            "Make a new file {p} and put '{c}' in it.", "Note '{c}' down in {p}.", "Add '{c}' to a file called {p}.",
            "I want '{c}' saved in {p}.", "Could you write the line '{c}' to {p}?", "Keep '{c}' in {p} for me.",
            "Record '{c}' in the file {p}.", "{p} should contain '{c}'. Write it.", "Create {p} and write '{c}' into it.",
            "Drop '{c}' into {p}.", "Type '{c}' into a file named {p}.", "Put this in {p}: '{c}'",
            "Log '{c}' to {p}.", "new file {p} with the text '{c}'"])

    # -- more saves (DemoConfig.save_rows: SAVE_MIX, planner rows only) -----------------------------
    # Written after v39's data/eval/save_files.jsonl misses: texts that read like a message or a
    # task of their own ("Standup moved to 9:30", "Hello from the agent!") went to query_sql or llm,
    # long texts were cut, file names misspelled; 57 of v39's ~1,260 planner rows save a given text.

    NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Farah", "Goran", "Hana", "Ivo", "Jonas", "Kemi", "Lars",
             "Mina", "Nour", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tomas", "Uma", "Vera", "Wen", "Yusuf"]

    def message_text(self) -> str:
        """A text to save shaped like a real note or message: times, dates, numbers, punctuation,
        and imperatives that read like a task for another tool ("Email Rosa the harbor report")."""
        v = self.values if self.values is not None else self.rng
        words = self.bank or ["report", "budget", "garden", "meeting", "invoice", "trip", "review", "launch"]
        w, x, name = v.choice(words), v.choice(words), v.choice(self.NAMES)
        hhmm = f"{v.randint(0, 23)}:{v.choice(['00', '15', '30', '45', f'{v.randint(0, 59):02d}'])}"
        day, month = v.choice(WEEKDAYS), v.choice(MONTHS)
        iso = f"20{v.randint(24, 31)}-{v.randint(1, 12):02d}-{v.randint(1, 28):02d}"
        n = v.randint(2, 9999)
        return v.choice([
            f"{w.capitalize()} review moved to {hhmm}", f"Greetings from the {w} team!", f"{name} called about the {w}",
            f"Order #{n} {v.choice(['shipped', 'delivered', 'cancelled', 'on hold'])}", f"Bus {n % 300} leaves at {hhmm}",
            f"Remember: {w} {x} on {day}", f"Buy {w}, {x} and {n % 12 + 2} eggs", f"Search for {w} later",
            f"Call {name} at {hhmm}", f"Translate the {w} notes by {day}", f"Email {name} the {w} report",
            f"Compute the {w} totals before {month} {n % 28 + 1}", f"Look up {w} {x} tomorrow",
            f"The {w} {x} is ready.", f"{w.capitalize()} done, {x} next", f"Room {n % 500}: {w} meeting, {hhmm}",
            f"Price of {w}: {n} EUR", f"{w}-{x} v{n % 9}.{n % 7}.{n % 10} approved", f"{name}'s birthday: {month} {n % 28 + 1}",
            f"Deadline {iso}: {w} draft", f"Who took the {w}? Ask {name}.", f"{w.capitalize()} at {hhmm} sharp!",
            f"Pay {n % 900 + 10} USD for the {w} by {day}", f"Step {n % 9 + 1}: check the {w}, then the {x}",
        ])

    def save_message(self) -> Draft:
        """A note or message saved as given, in phrasings the other save intents do not use."""
        return self._save_given("save_message", self.message_text, [
            "Save this note to {p}: '{c}'", "Please write '{c}' in the file {p}.", "{p} needs one line: '{c}'.",
            "Could you create {p} holding the text '{c}'?", "Write down '{c}' and save it as {p}.",
            "Put the message '{c}' in {p}.", "Store the note '{c}' under {p}.", "I'd like {p} to contain '{c}'.",
            "Save the line '{c}' for me in {p}.", "New note in {p}: '{c}'", "Make {p} and write '{c}' there.",
            "Please save '{c}' to the file {p}, thanks.", "write the words '{c}' into {p}",
            "Can you save the message '{c}' as {p}?", "Copy '{c}' into a new file {p}.", "Into {p}, write: '{c}'",
            "Remember this in {p}: '{c}'", "File {p} should read '{c}'.", "Create a text file {p} with the line '{c}'.",
            "Just save '{c}' in {p}.", "Store the sentence '{c}' in the file {p}.", "Note in {p}: '{c}'. Save it please.",
            "Fill {p} with the text '{c}'.", "Save the following to {p}: '{c}'", "Write '{c}' as the content of {p}.",
            "Please put '{c}' down in {p}.", "save the note '{c}' in {p} please", "I want a file named {p} that says '{c}'.",
            "Could you write '{c}' into a file, {p}?", "Take this down in {p}: '{c}'"])

    def calc_wide(self) -> Draft:
        """Arithmetic in words the base intent does not use: powers, tips, differences, products."""
        r = self.rng
        kind = r.randrange(4)
        if kind == 0:
            a, b = r.randint(2, 12), r.randint(2, 20)
            expr = f"{a} ** {b}"
            th = {2: "2nd", 3: "3rd"}.get(b, f"{b}th")
            templates, slots = ["{a} to the {th}?", "{a} to the {th} power, please.", "What's {a} raised to {b}?",
                                "How much is {a} to the power {b}?", "Raise {a} to the {th} power.",
                                "{a} multiplied by itself {b} times?"], dict(a=a, b=b, th=th)
        elif kind == 1:
            p, x = r.choice([10, 12, 15, 18, 20, 22, 25]), r.randint(12, 300)
            expr = f"{x} * {p} / 100"
            templates, slots = ["How much is a {p}% tip on {x} dollars?", "Work out a {p} percent tip for a bill of {x}.",
                                "My bill is {x}. What's {p} percent of it?", "{p}% tip on {x}?",
                                "What do I tip on a {x} euro meal at {p}%?"], dict(p=p, x=x)
        elif kind == 2:
            a, b = r.randint(100, 9999), r.randint(2, 999)
            expr = f"{a} - {b}"
            templates, slots = ["Take {b} away from {a}.", "{a} minus {b}?", "What is left if I remove {b} from {a}?",
                                "Subtract {b} from {a}, please.", "difference between {a} and {b}?"], dict(a=a, b=b)
        else:
            a, b = r.randint(11, 999), r.randint(11, 99)
            expr = f"{a} * {b}"
            templates, slots = ["Multiply {a} and {b}.", "What do you get if you multiply {a} by {b}?",
                                "{a} x {b}?", "What's the product of {a} and {b}?", "times {a} by {b}"], dict(a=a, b=b)
        tid, text = self._pick(f"calc_wide:{kind}", templates, **slots)
        return self._calc_draft(tid, text, expr)

    DIRECTOR_MORE = {
        "film_year": ["Which year was {q} released in?", "From which year is the film {q}?", "Production year of {q}?",
                      "{q} -- what year?", "The year of {q}, please.", "When did {q} reach cinemas?",
                      "what year is {q} from", "Look up the year {q} was released."],
        "birthplace": ["{n}: where were they born?", "Birth city of {n}?", "Which town was {n} born in?",
                       "Where is {n}'s birthplace?", "Tell me {n}'s home city.", "born where: {n}?"],
        "birth_year": ["{n}: year of birth?", "Which year was {n} born?", "Look up the year {n} was born.",
                       "What's the birth year of the filmmaker {n}?", "{n}, born in?", "Year {n} was born?"],
        "compare_births": ["Who came first, {a} or {b}?", "Which of {a} and {b} is the elder?",
                           "Is {a} older than {b}? Tell me the older one.", "{a} or {b}: who was born first?",
                           "Which one is older, {a} or {b}?", "Who was born before the other, {a} or {b}?"],
    }

    def director_facts(self) -> Draft:
        """Release years and directors' birth facts (the film database) in new words."""
        name = self.rng.choice(sorted(self.DIRECTOR_MORE))
        return getattr(self, name)(more=self.FILM_MORE[name] + self.DIRECTOR_MORE[name])

def _error_reason(evidence: str) -> str:
    """The innermost reason of an error evidence text, as the worker writes it (``Error:
    ToolError: tool 'x' failed with arguments {...}: NoNetworkError: no network: ...``), short."""
    text = re.sub(r"^Error: (ToolError: tool '[^']+' failed with arguments \{.*?\}: )?", "", evidence.strip())
    text = re.sub(r"^[A-Z]\w*(?:Error|Exception): ", "", text)
    text = re.split(r" \(|: set |\n", text)[0]
    return text.rstrip(".") + "."


# How many drafts of each intent a build draws (the mix). Chains and the network tools are fewer.
MIX = {"film_director": 1.0, "director_films": 1.0, "birth_year": 0.8, "birthplace": 0.5, "film_year": 0.6,
       "count_films": 0.4, "wiki_about": 1.0, "person_born": 0.6, "person_died": 0.3, "company_founded": 0.4, "capital": 0.4, "founder": 0.4,
       "arithmetic": 1.2, "python": 1.0, "clock": 1.0, "save_text": 0.9, "web": 0.6, "bilibili": 0.5, "llm": 0.7,
       "lookup_then_save": 0.9, "calc_chain": 0.4, "wiki_then_llm": 0.5, "compare_births": 0.4}


# The mix of the extra chain drafts (DemoConfig.chain_rows; planner rows only).
CHAIN_MIX = {"save_chain": 2.0, "summary_chain": 1.0, "lookup_then_save": 0.5, "wiki_then_llm": 0.3,
             "compare_births": 0.4, "calc_chain": 0.4}


# The mix of the wider drafts (DemoConfig.wide_rows; planner rows only): new shapes and phrasings of
# the encyclopedia, Python, `llm` and film-database tasks.
WIDE_MIX = {"wiki_question": 1.0, "python_wide": 1.0, "llm_wide": 0.8, "film_wide": 0.8}


# The mix of the focused drafts (DemoConfig.focus_rows; planner rows only): v14's missed kinds, Python
# and `llm` tasks (about 28 and 22 rows among v14's 670 did not move them) and the film database's
# directors asked as the encyclopedia's people are.
FOCUS_MIX = {"python_wide": 1.0, "llm_wide": 0.8, "born_shared": 0.6}


# The mix of the film drafts (DemoConfig.films_rows; planner rows only): the second-hop question
# ("another film by the director of X", one SQL with a subquery) that v15 answered with the
# director, and the count that it asked of the wrong column.
FILMS_MIX = {"director_films_any": 1.0, "count_films_any": 0.4}


# The mix of the rare drafts (DemoConfig.rare_rows; planner rows only): the kinds with the fewest
# plans (the clock, the web, saving files, the calculator in words) and the film database's years
# and birth facts in new words, which v19 sent to other tools on the hand-written set.
RARE_MIX = {"clock_wide": 1.0, "web_wide": 1.0, "save_wide": 1.0, "calc_wide": 1.0, "director_facts": 1.0}


# The mix of the save drafts (DemoConfig.save_rows; planner rows only): a given text saved as given
# (notes and messages, :meth:`Intents.save_message`) and a lookup whose answer is saved.
SAVE_MIX = {"save_message": 1.0, "save_chain": 1.0}


def eval_texts() -> set[str]:
    """Every task text of ``data/eval`` (normalised), which the generator must never emit."""
    out = set()
    for path in (DATA / "eval").glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.add(normalise(json.loads(line)["task"]))
    return out


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def saved_values(d: Draft) -> list[str]:
    """The file names and literal texts of ``d``'s save_file steps (evidence variables left out)."""
    out = []
    for _, tool, given in d.steps:
        args = save_arguments(given) if tool == "save_file" else None
        if args:
            out += [v for v in args.values() if v and not re.fullmatch(r"#E\d+", v)]
    return out


def lower_except(text: str, keep: Sequence[str]) -> str:
    """``text`` lower-cased but for the pieces in ``keep``."""
    if not keep:
        return text.lower()
    parts = re.split("(" + "|".join(re.escape(k) for k in sorted(keep, key=len, reverse=True)) + ")", text)
    return "".join(p if i % 2 else p.lower() for i, p in enumerate(parts))


def draw(n: int, seed: int, banned: set[str] | None = None, mix: dict[str, float] | None = None,
         skip: set[str] = frozenset(), open_values: bool = False) -> list[Draft]:
    """``n`` drafts in ``mix`` (:data:`MIX`) proportions, styled, none equal to a banned (eval)
    text or to a normalised text in ``skip``; with ``open_values``, the same tasks with file names
    and saved texts from the encyclopedia's words (:meth:`Intents.open_text`)."""
    rng = random.Random(seed)
    intents = Intents(World.load(), rng, random.Random(f"open-values/{seed}") if open_values else None)
    mix = MIX if mix is None else mix
    names = list(mix)
    weights = [mix[k] for k in names]
    banned = eval_texts() if banned is None else banned
    out, seen = [], set()
    while len(out) < n:
        d = getattr(intents, rng.choices(names, weights)[0])()
        style = rng.choice(STYLES)
        if open_values and style == "lower":  # a file name and a text to save are copied as written
            d.text = lower_except(d.text, saved_values(d))
        else:
            d.text = styled(d.text, style, d.entities, rng)
        d.template = f"{d.template}/{style}"
        key = normalise(d.text)
        if key in banned or key in seen or key in skip:
            continue
        seen.add(key)
        out.append(d)
    return out


# ------------------------------------------------------------------------------------------------
# Grounding: run each plan with the real offline tools
# ------------------------------------------------------------------------------------------------

def _clock_text(rng: random.Random) -> str:
    """What ``get_current_time`` returned until 2026-12-05, for a seeded moment in a seeded zone
    (deterministic data). The tool now also writes "HH:MM zone" beside the weekday (toolkit/tools/clock.py);
    v40 was trained on this form, and changing it changes the shipped data (the digest test)."""
    zone = rng.choice([("UTC", 0), ("CET", 1), ("JST", 9), ("EST", -5), ("CST", 8)])
    moment = datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=zone[1]))) + timedelta(
        seconds=rng.randrange(3 * 365 * 86400))
    return f"{moment.isoformat(timespec='seconds')} ({moment.strftime('%A')}, {zone[0]})"


class _SeededClock:
    """``get_current_time`` as the toolbox describes it, answering seeded moments."""

    def __init__(self, real, rng: random.Random):
        self.name, self.description, self.inputs, self.output_type = real.name, real.description, real.inputs, "string"
        self.rng = rng

    def __call__(self) -> str:
        return _clock_text(self.rng)


# What the ``llm`` tool answers in the training data's evidence (the solver learns to pass it on).
LLM_ANSWERS = {
    ("good morning", "French"): "Bonjour", ("good morning", "Spanish"): "Buenos dias",
    ("good morning", "German"): "Guten Morgen", ("good morning", "Italian"): "Buongiorno",
    ("good morning", "Chinese"): "Zao shang hao", ("thank you", "French"): "Merci",
    ("thank you", "Spanish"): "Gracias", ("thank you", "German"): "Danke", ("thank you", "Italian"): "Grazie",
    ("thank you", "Chinese"): "Xie xie", ("where is the station", "French"): "Ou est la gare ?",
    ("where is the station", "Spanish"): "Donde esta la estacion?", ("where is the station", "German"): "Wo ist der Bahnhof?",
    ("where is the station", "Italian"): "Dov'e la stazione?", ("where is the station", "Chinese"): "Che zhan zai na li?",
    ("I love cats", "French"): "J'adore les chats", ("I love cats", "Spanish"): "Me encantan los gatos",
    ("I love cats", "German"): "Ich liebe Katzen", ("I love cats", "Italian"): "Amo i gatti",
    ("I love cats", "Chinese"): "Wo ai mao", ("see you soon", "French"): "A bientot",
    ("see you soon", "Spanish"): "Hasta pronto", ("see you soon", "German"): "Bis bald",
    ("see you soon", "Italian"): "A presto", ("see you soon", "Chinese"): "Hui tou jian",
    "autumn": "Red leaves let go of the branch; the wind carries them home.",
    "the sea": "Grey waves fold and unfold; the shore keeps counting them.",
    "coffee": "Dark cup in the morning, the day starts warm and slow.",
    "a robot": "Metal hands, patient gears, learning the shape of a smile.",
    "rain": "Soft rain on the roof, the streets breathe again.",
    "mountains": "Old stone giants wear the clouds like scarves.",
    "happy": "joyful", "fast": "quick", "big": "large", "smart": "clever", "quiet": "silent", "brave": "courageous",
    "a birthday message for my sister": "Happy birthday, sis! Wishing you a year full of laughter and good surprises.",
    "a polite reminder about a meeting": "Just a friendly reminder that our meeting is tomorrow at 10am. See you there!",
    "a slogan for a bakery": "Fresh from our oven to your table.",
    "a title for a blog post about hiking": "Trail Notes: Finding Quiet on the Mountain Path",
}


def _llm_answer(prompt: str, evidence_hint: str = "") -> str:
    m = re.match(r"Translate '(.+)' into (\w+)\.", prompt)
    if m:
        return LLM_ANSWERS[(m.group(1), m.group(2))]
    for pattern in (r"Write a short poem about (.+)\.", r"Give one synonym for the word '(.+)'\.", r"Write (.+)\."):
        m = re.match(pattern, prompt)
        if m and m.group(1) in LLM_ANSWERS:
            return LLM_ANSWERS[m.group(1)]
    if prompt.startswith("Summarize in one sentence: "):
        body = prompt.removeprefix("Summarize in one sentence: ")
        return _first_sentence(body.split(": ", 1)[-1])
    raise KeyError(f"no stand-in llm answer for {prompt!r}")


def llm_stand_in(messages, stop_sequences=None, **kw) -> str:
    """An engine for the ``llm`` tool that answers from :data:`LLM_ANSWERS` (deterministic data)."""
    return _llm_answer(messages[-1]["content"])


def ground(drafts: Sequence[Draft], box, seed: int) -> list[dict]:
    """Run each draft's plan through the pipeline's own worker (``pipeline.worker.run_steps``:
    real substitution, real error evidence); returns ``{"draft", "plan", "evidence", "answer"}``.

    ``get_current_time`` answers seeded moments and ``llm`` answers from :data:`LLM_ANSWERS`, so
    the data is deterministic and the build needs no model; every other tool runs for real.
    """
    from pipeline.distributor import Call
    from pipeline.plan import parse_plan
    from pipeline.worker import run_steps

    rng = random.Random(seed + 7)
    tools = dict(box.items()) if hasattr(box, "items") else {t.name: t for t in box}
    tools["get_current_time"] = _SeededClock(tools["get_current_time"], rng)
    tools["llm"].engine = llm_stand_in
    out = []
    for d in drafts:
        text = "\n".join(f"Plan: {desc}\n#E{i + 1} = {tool}[{inp}]" for i, (desc, tool, inp) in enumerate(d.steps))
        plan = parse_plan(text, list(tools))
        calls = {s.var: Call(s.var, s.tool, call_arguments(s), "caller" if s.tool == "save_file" else "direct")
                 for s in plan}
        found = run_steps(plan, calls, tools, timeout=30)
        evidence = {v: e.text for v, e in found.items()}
        answer = d.answer(evidence) if callable(d.answer) else d.answer
        out.append({"draft": d, "plan": plan, "evidence": evidence, "answer": answer})
    return out


def save_arguments(given: str) -> dict | None:
    """``{"path", "content"}`` of a save_file step's input ``path=..., content=...``; None otherwise."""
    m = re.fullmatch(r"path=(.*?), content=(.*)", given, re.DOTALL)
    return {"path": m.group(1), "content": m.group(2)} if m else None


def call_arguments(step) -> dict:
    """The arguments a step's input stands for: ``path=..., content=...`` for ``save_file``, the
    input as the one argument otherwise (what the distributor sends a one-string tool)."""
    if step.tool == "save_file":
        args = save_arguments(step.input)
        if args is None:
            raise ValueError(f"save_file input is not 'path=..., content=...': {step.input!r}")
        return args
    if step.tool == "get_current_time":
        return {}
    key = {"search_wiki": "query", "search_web": "query", "search_bilibili": "keyword", "query_sql": "sql",
           "python_interpreter": "code", "calculator": "expression", "llm": "prompt"}[step.tool]
    return {key: step.input}


# ------------------------------------------------------------------------------------------------
# Rows
# ------------------------------------------------------------------------------------------------

def planner_tools(box, used: Sequence[str], rng: random.Random, full_share: float = 0.35) -> list:
    """The tool list of one planner row: the whole toolbox (``full_share`` of rows, in its own
    order), else the used tools plus a random few, shuffled."""
    names = list(box)
    if rng.random() < full_share:
        return [box[n] for n in names]
    extra = [n for n in names if n not in used]
    chosen = list(dict.fromkeys(list(used) + rng.sample(extra, rng.randint(1, min(4, len(extra))))))
    rng.shuffle(chosen)
    return [box[n] for n in chosen]


def tool_first(plan):
    """``plan`` with each description opening on its tool: "Use query_sql to look up ...". The
    tool is decided by a plan's first words, and a pretrained model copies a name from the tool
    list more readily than it learns which paraphrase ("Look up", "Read", "Search") goes with which
    tool (measured on v7 and v10: 1-4 nats on that first word of their own training rows, under
    0.1 on the rest)."""
    from dataclasses import replace

    from pipeline.plan import Plan

    def said(step):
        d = step.description
        return replace(step, description=f"Use {step.tool} to {d[:1].lower()}{d[1:]}")

    return Plan(tuple(said(s) for s in plan.steps))


def colon_saves(plan):
    """``plan`` with each save_file input written ``path: X; content: Y`` (the catalog's style) rather
    than ``path=X, content=Y``: after ": " a file name splits into the pieces it has after the task's
    space (" groceries" one token; "=groceries" g|ro|cer|ies, which the planner must spell out and
    misspells: v40 wrote "gobergs.txt")."""
    from dataclasses import replace

    from pipeline.plan import Plan

    def restyled(step):
        args = save_arguments(step.input) if step.tool == "save_file" else None
        return replace(step, input=f"path: {args['path']}; content: {args['content']}") if args else step

    return Plan(tuple(restyled(s) for s in plan.steps))


def spread_by_kind(phrasings: Sequence[str], count: int, rng: random.Random) -> list[int]:
    """``count`` indices of ``phrasings`` (template ids, ``"clock_time:3"``), spread over their kinds
    (the id less its number: ``"clock_time"``): a round takes one of each kind's not yet taken, in an
    order shuffled per kind, until ``count``; the last round's kinds are drawn at random. A uniform
    draw over the later drafts follows their mix (v35: 120 rows, four of them the clock, none asking
    the time); this gives each kind its share before any kind gets a second."""
    kinds: dict[str, list[int]] = {}
    for i, p in enumerate(phrasings):
        kinds.setdefault(p.rsplit(":", 1)[0], []).append(i)
    for k in sorted(kinds):
        rng.shuffle(kinds[k])
    picked: list[int] = []
    for n in range(max(map(len, kinds.values()), default=0)):
        this_round = [kinds[k][n] for k in sorted(kinds) if n < len(kinds[k])]
        rng.shuffle(this_round)
        picked += this_round[:count - len(picked)]
        if len(picked) >= count:
            break
    return sorted(picked)


def clock_part_rows(sets: int, seed: int, skip: set[str] = frozenset()) -> list[dict]:
    """Solver rows in sets of four over one seeded clock reading each: its time, date, weekday and
    year, each asked in a phrasing of :attr:`Intents.CLOCK_ASKS` or :attr:`Intents.CLOCK_MORE`
    (styled; none an evaluation text or a normalised text in ``skip``). The four rows of a set differ
    in the question alone, so the solver learns which part of one reading a question asks for: v35
    answered "What time is it now?" with the weekday and v36 with the date, each clock solver row
    of theirs reading another moment."""
    from pipeline.plan import parse_plan

    rng = random.Random(seed)
    banned = eval_texts() | {normalise(t) for t in skip}
    plan = parse_plan("Plan: Read the current date and time.\n#E1 = get_current_time[]", ["get_current_time"])
    rows = []
    for _ in range(sets):
        evidence = _clock_text(rng)
        parts = _clock_parts(evidence)
        for part in ("time", "date", "weekday", "year"):
            for _ in range(1000):
                ids = [f"clock_{part}:{i}" for i in range(len(Intents.CLOCK_ASKS[part]))] + [
                    f"clock_wide_{part}:{i}" for i in range(len(Intents.CLOCK_MORE[part]))]
                i = rng.randrange(len(ids))
                plain = (Intents.CLOCK_ASKS[part] + Intents.CLOCK_MORE[part])[i]
                style = rng.choice(STYLES)
                text = styled(plain, style, (), rng)
                if normalise(text) not in banned:
                    break
            else:
                raise ValueError(f"clock_part_rows: no phrasing of the clock's {part} left for set {len(rows) // 4 + 1}")
            banned.add(normalise(text))
            meta = {"intent": "clock", "phrasing": f"{ids[i]}/{style}", "tools": ["get_current_time"]}
            rows.append({"instruction": formats.solver_instruction(text, plan.steps, {"#E1": evidence}),
                         "output": parts[part], "meta": meta})
    return rows


def _solver_row(text: str, shown, grounded: dict, workspace: Path, meta: dict) -> dict:
    """The solver's row of one grounded task: its plan and evidence in, its answer out (the
    workspace's folder named "workspace")."""
    evidence = {k: v.replace(str(workspace.resolve()), "workspace") for k, v in grounded["evidence"].items()}
    return {"instruction": formats.solver_instruction(text, shown.steps, evidence), "output": grounded["answer"],
            "meta": meta}


def demo_rows(seed: int, workspace: Path, planner: int, solver: int, caller: int, extra_planner: int = 0,
              full_share: float = 0.35, tool_first_plans: bool = False, react: int = 0,
              code: int = 0, chains: int = 0, wide: int = 0, focus: int = 0,
              films: int = 0, rare: int = 0, extra_solver: int = 0,
              solver_by_kind: bool = False, clock_sets: int = 0, open_values: bool = False,
              saves: int = 0, colon_save_inputs: bool = False, multi: int = 0) -> dict[str, list[dict]]:
    """``{"planner", "solver", "caller"}`` Alpaca rows (with ``meta``) and ``"tasks"`` (in
    ``pipeline.eval``'s format) from ``planner`` grounded drafts, plus ``extra_planner`` more
    drafts that make planner rows only (the solver and caller rows, drawn first, stay the same).
    ``full_share``: the share of planner rows that list the whole toolbox (:func:`planner_tools`);
    ``tool_first_plans``: the planner and solver rows' plans open each step on its tool
    (:func:`tool_first`; the caller rows stay as they were). ``react``/``code``: trajectories of the
    ReAct-JSON and code agents over the same tasks (:mod:`train.trajectories`), as chat rows in
    ``"agents"`` (``"dropped"`` counts replays that left their script); ``multi``: per mode, that many
    more trajectories of tasks of two steps or more, from the drafts after the first ``planner``
    (the agents then learn to go on after a first tool). ``chains``: that many more
    drafts of two-step tasks (:data:`CHAIN_MIX`), planner rows only, drawn after the others (which
    stay the same). ``wide``: that many more drafts of :data:`WIDE_MIX` (new shapes and phrasings),
    planner rows only, drawn after those; ``focus``: of :data:`FOCUS_MIX`, after those;
    ``films``: of :data:`FILMS_MIX`, after those; ``rare``: of :data:`RARE_MIX`, after those;
    ``saves``: of :data:`SAVE_MIX`, after those. ``colon_save_inputs``: save_file steps written
    ``path: X; content: Y`` in every row's plan (:func:`colon_saves`; the caller's JSON stays).
    ``extra_solver``: that many more solver rows, after the others, from the later drafts (those
    beyond ``planner``) that have an answer, picked evenly over them by a generator of their own;
    with ``solver_by_kind``, spread over their kinds instead (:func:`spread_by_kind`).
    ``clock_sets``: that many sets of four clock solver rows after those (:func:`clock_part_rows`).
    ``open_values``: file names and saved texts from the encyclopedia's words (:func:`draw`)."""
    from toolkit import default_toolbox

    workspace = Path(workspace).resolve()  # the tools name it absolutely; the rows say "workspace"
    box = default_toolbox(workspace=str(workspace), search_url=None)
    rng = random.Random(seed + 3)
    drafts = draw(planner + extra_planner, seed, open_values=open_values)
    for count, offset, mix in ((chains, 7, CHAIN_MIX), (wide, 11, WIDE_MIX), (focus, 13, FOCUS_MIX),
                                 (films, 17, FILMS_MIX), (rare, 19, RARE_MIX),
                                 (saves, 41, SAVE_MIX)):
        if count:  # each later draw after the earlier ones, with a seed of its own: those stay the same
            drafts += draw(count, seed + offset, mix=mix, skip={normalise(d.text) for d in drafts},
                           open_values=open_values)
    grounded = ground(drafts, box, seed)
    save = formats.tool_spec(box["save_file"])
    rows: dict[str, list] = {"planner": [], "solver": [], "caller": [], "tasks": [], "agents": [], "dropped": []}
    later = []  # the later drafts' solver rows, for extra_solver
    for i, g in enumerate(grounded):
        d, plan = g["draft"], g["plan"]
        given = colon_saves(plan) if colon_save_inputs else plan  # what the caller reads
        shown = tool_first(given) if tool_first_plans else given
        tools = [s.tool for s in plan]
        meta = {"intent": d.intent, "phrasing": d.template, "tools": tools}
        rows["planner"].append({"instruction": formats.planner_instruction(d.text,
                                                                           planner_tools(box, tools, rng, full_share)),
                                "output": shown.render(), "meta": meta})
        if i >= planner:
            if g["answer"] and extra_solver:
                later.append(_solver_row(d.text, shown, g, workspace, meta))
            continue
        if g["answer"] and len(rows["solver"]) < solver:
            rows["solver"].append(_solver_row(d.text, shown, g, workspace, meta))
        for step, seen in zip(plan, given):
            if step.tool == "save_file" and len(rows["caller"]) < caller:
                rows["caller"].append({"instruction": formats.caller_instruction(seen, [save]),
                                       "output": formats.render_call("save_file", call_arguments(step)), "meta": meta})
    if later:  # evenly over the later kinds (chains, wide, focused, film and rare tasks), in their order
        if solver_by_kind:
            picked = spread_by_kind([r["meta"]["phrasing"] for r in later], extra_solver, random.Random(seed + 29))
        else:
            picked = sorted(random.Random(seed + 29).sample(range(len(later)), min(extra_solver, len(later))))
        rows["solver"] += [later[i] for i in picked]
    if clock_sets:  # a generator of their own, none a text of the drafts: the other rows stay the same
        rows["solver"] += clock_part_rows(clock_sets, seed + 37, {d.text for d in drafts})
    if react or code:
        from train.trajectories import agent_rows

        steps = [g for g in grounded[planner:] if len(g["plan"]) >= 2]
        for mode, limit in (("react", react), ("code", code)):
            got, dropped = agent_rows(grounded, box, mode, limit)
            if limit and multi:
                more, also = agent_rows(steps, box, mode, multi)
                got, dropped = got + more, dropped + also
            # save_file's observation names the workspace folder: "workspace", as in the solver's rows
            rows["agents"] += [dict(r, messages=[dict(m, content=m["content"].replace(str(workspace), "workspace"))
                                                 for m in r["messages"]]) for r in got]
            rows["dropped"].append(dropped)
    return rows
