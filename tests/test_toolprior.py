"""The planner's tool prior (pipeline.formats.toolprior): the retrieval index, the processor under
the real plan grammar and a real tokenizer, and its way through make_plan and Pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import formats
from pipeline.formats import constrain
from pipeline.formats.toolprior import ToolIndex, ToolPrior, ToolPriorProcessor, count_goals, task_holdings, words

CATALOG = {
    "llm": "A language model like yourself. Use it to reason over evidence, summarise or answer from general "
           "knowledge. Input can be any instruction.",
    "sports_scores": "Get the latest results of a sports team.",
    "detect_language": "Detect the language a text is written in.",
    "translate_text": "Translate text into another language.",
    "extract_entities": "Extract the named entities (people, places, organisations) from a text.",
    "search_wiki": "Search Wikipedia and return the top 3 results.",
}


def test_words_are_stemmed_content_words():
    assert words("Pull out the names mentioned") == words("pull out the name mentioned") == {"pull", "out", "nam", "mentio"}
    assert words("extract_entities") == {"extrac", "entit"}
    assert "news" in words("news") and "new" in words("New York")  # "news" keeps its s: not "new"
    assert words("translate") != words("transcribe")
    assert words("Find the result of the step, then use it") == set()  # nothing that tells tools apart


def test_index_scores_the_tool_the_description_names():
    index = ToolIndex(CATALOG)
    s = index.scores("Detect the language of the result.")
    assert max(s, key=s.get) == "detect_language" and s["detect_language"] == 1.0
    assert s["detect_language"] > s["translate_text"] > 0 == s["sports_scores"]  # "language": two tools; "detect": one
    s = index.scores("Pull out the names mentioned in it.")
    assert max(s, key=s.get) == "extract_entities"
    assert set(index.scores("Do it now.").values()) == {0.0}  # no shared word: no preference
    # a word few tools have counts for more than words many share (IDF over the listed tools)
    files = ToolIndex({"read_file": "Read a text file from the workspace.",
                       "summarize_text": "Summarise a text in at most a given number of words.",
                       "list_directory": "List the files in a workspace folder."})
    s = files.scores("Summarize the text of the file.")
    assert s["summarize_text"] == 1.0 > s["read_file"] > 0


@pytest.mark.parametrize("task, goals", [
    # the shipped planner ended these a step or more short (data/eval/unseen_tools.jsonl, v40)
    ("Get the details of Spirited Away; also find the local time in Oslo, please.", 2),
    ("Search the web for reviews of a mechanical keyboard and get the latest results of New York Yankees, and "
     "summarize everything you found.", 3),
    ("Help me first search the web for recent news about Nvidia; after that, detect the language of that. Next, "
     "summarize that in 6 words or fewer.", 3),
    ("Find the coordinates of Shibuya Crossing, Tokyo. Next, write it into notes.txt, please.", 2),
    ("I'd like you to open travel_plan.md and read it, and pull out the names mentioned in it and then detect the "
     "language of what you found.", 3),
    ("Find news about Nvidia as well as translate 'hi' into French", 2),
    ("Look it up -- once that is done, email it to Rosa", 2),
    # one goal, whatever "and" or a second sentence says
    ("Who is older, Martin Scorsese or Greta Gerwig?", 1),
    ("Compare the populations of France and Germany.", 1),
    ("What movies did the director of 'Dunkirk' direct? List one of them.", 1),
    ("I'm trying to remember who made Memories of Murder. Can you check?", 1),
    ("Create the file quote.txt and write 'Simplicity is the soul of efficiency' in it", 1),
    ("I need 'Call Dr. Okafor on Thursday' saved as todo/doctor.txt", 1),
    ("Compare the results and say which looks best.", 1),
    ("", 1),
])
def test_count_goals_reads_the_words_that_join_goals(task, goals):
    assert count_goals(task) == goals


@pytest.mark.parametrize("name", ["handwritten", "in_distribution", "save_files", "unseen_tools",
                                  "multi_goal/handwritten_multi_goal"])
def test_count_goals_never_asks_for_more_steps_than_an_eval_tasks_plan(name):
    """More goals than the plan needs would push the planner to a step too many: on the eval sets
    the count is never above the expected tools (it may be below: then the planner decides)."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "data" / "eval" / f"{name}.jsonl"
    over = [(row["id"], count_goals(row["task"]), len(row["expect"]["tools"]))
            for row in map(json.loads, path.read_text().splitlines())
            if count_goals(row["task"]) > len(row["expect"]["tools"])]
    assert over == []


def test_a_plan_short_of_its_goals_goes_on(tiny_tokenizer):
    """After a step's "]" the plan grammar allows the next step's "\n" or EOS; with goals, a plan of
    fewer steps gets the prior's weight on going on, and one with as many (of two goals or more) on
    ending; a one-goal plan's later steps are left to the model. A held value not yet written goes on."""
    vocab = len(tiny_tokenizer)
    eos = tiny_tokenizer.eos_token_id
    tools = list(CATALOG)

    def next_token(plan: str, goals: int, weight: float = 5.0, wants_end: bool = True, holds=()) -> str:
        goals = tuple(f"goal {k}" for k in range(goals))
        inner = constrain.logits_processor(tiny_tokenizer, vocab, grammar=constrain.plan_grammar(tools, 2048))
        proc = ToolPriorProcessor(tiny_tokenizer.decode, [ToolPrior(tuple(CATALOG.items()), weight, goals, holds)],
                                  inner=inner)
        prompt = tiny_tokenizer("### Response:\n", add_special_tokens=False)["input_ids"]
        ids = list(prompt)
        for token in tiny_tokenizer(plan, add_special_tokens=False)["input_ids"] + [None]:
            scores = np.zeros(vocab, dtype=np.float32)
            if wants_end:
                scores[eos] = 3.0  # the "model" would end here
            else:  # ... or go on
                scores[tiny_tokenizer("\n", add_special_tokens=False)["input_ids"][0]] = 3.0
            out = proc(np.asarray([ids]), scores[None, :])[0]
            if token is None:
                return "EOS" if int(out.argmax()) == eos else tiny_tokenizer.decode([int(out.argmax())])
            ids.append(token)

    one = "Plan: Get the details of Spirited Away.\n#E1 = search_wiki[Spirited Away]"
    two = one + "\nPlan: Find the local time in Oslo.\n#E2 = llm[time in Oslo]"
    assert next_token(one, goals=2).startswith("\n")
    assert next_token(one, goals=2, weight=1.0) == "EOS"  # a weak prior does not overrule a sure model
    assert next_token(one, goals=1) == "EOS" and next_token(one, goals=0) == "EOS"
    assert next_token(two, goals=2) == "EOS" and next_token(two, goals=3).startswith("\n")
    # two goals or more, each with its step: going on costs the weight (one goal may need more steps)
    assert next_token(two, goals=2, wants_end=False) == "EOS"
    assert next_token(two, goals=1, wants_end=False).startswith("\n")
    assert next_token(two, goals=0, wants_end=False).startswith("\n")
    with pytest.raises(ValueError, match="goals"):
        ToolPrior(tuple(CATALOG.items()), 4.0, 2)
    # handwritten sql-13 "Did Ridley Scott or James Cameron come into the world first?" ended after
    # Ridley Scott's row: a held value the task names that no step has written a word of goes on
    held = (("search_wiki", "Ridley Scott"), ("search_wiki", "James Cameron"))
    ridley = "Plan: Use search_wiki.\n#E1 = search_wiki[Ridley Scott]"
    assert next_token(ridley, goals=0, holds=held).startswith("\n")
    assert next_token(ridley, goals=0, holds=held[:1]) == "EOS"
    assert next_token(ridley + "\nPlan: Use search_wiki.\n#E2 = search_wiki[Cameron]", goals=0, holds=held) == "EOS"


@pytest.mark.parametrize("task, goals", [
    ("Convert 999.99 USD to CNY. Next, add 12 to it and find a hotel in Lima, please.",
     ["Convert 999.99 USD to CNY", "add 12 to it", "find a hotel in Lima"]),
    ("Task: book a table for 3 at Le Petit Bistro on 2026-01-18. Next, save that to report.md as well as find "
     "typescript code that parses carbon capture data.",
     ["book a table for 3 at Le Petit Bistro on 2026-01-18", "save that to report.md",
      "find typescript code that parses carbon capture data"]),
    ("Who is older, Martin Scorsese or Greta Gerwig?", ["Who is older, Martin Scorsese or Greta Gerwig"]),
    ("", []),
    # data/eval/multi_goal (written by hand after session 27; these five were read as one goal or two):
    # "Second, ...", "Once ...", a numbered list, a list of goals before its ", and <verb>"
    ("First, get me the current date. Second, save it to today.txt.",
     ["get me the current date", "save it to today.txt"]),
    ("Tell me about the Eiffel Tower from the encyclopedia. Once you have it, translate the first line into French.",
     ["Tell me about the Eiffel Tower from the encyclopedia", "translate the first line into French"]),
    ("1) find bilibili videos about sourdough baking 2) tell me what time it is",
     ["find bilibili videos about sourdough baking", "tell me what time it is"]),
    ("Find the year Titanic premiered, subtract it from 2025, and save the difference to titanic_age.txt.",
     ["Find the year Titanic premiered", "subtract it from 2025", "save the difference to titanic_age.txt"]),
    # ... and not: a list of names, a number's ")" outside a numbered list
    ("Compare the films of Nolan, Scorsese, and Kurosawa", ["Compare the films of Nolan, Scorsese, and Kurosawa"]),
    ("I have 3) apples and 2) pears", ["I have 3) apples and 2) pears"]),
])
def test_task_goals_are_the_tasks_own_words_from_each_verb_on(task, goals):
    from pipeline.formats.toolprior import task_goals

    assert task_goals(task) == goals


def _plan_line(tokenizer, before: str, goals: tuple[str, ...], prefer: str, weight: float = 5.0,
               also: str = "", holds: tuple[tuple[str, str], ...] = (), tools: dict[str, str] = CATALOG) -> str:
    """Greedy from ``before`` (a plan ending on "Plan: ") under the plan grammar of ``tools``, the
    "model" preferring the line ``prefer`` by 3 logits a token and ``also`` by 1; the Plan: line
    written (up to its "\n")."""
    vocab = len(tokenizer)
    inner = constrain.logits_processor(tokenizer, vocab, grammar=constrain.plan_grammar(list(tools), 2048))
    proc = ToolPriorProcessor(tokenizer.decode, [ToolPrior(tuple(tools.items()), weight, goals, holds)], inner=inner)
    prompt = tokenizer("### Response:\n", add_special_tokens=False)["input_ids"]
    ids = list(prompt)
    for token in tokenizer(before, add_special_tokens=False)["input_ids"] + [None] * 90:
        line = tokenizer.decode(ids[len(prompt):]).rsplit("Plan: ", 1)[-1] if token is None else None
        if line is not None and "\n" in line:
            return line.split("\n")[0]
        scores = np.zeros(vocab, dtype=np.float32)
        if line is not None:
            for t in range(vocab):  # the "model": it likes the pieces that go on writing `prefer`
                piece = tokenizer.decode([t])
                if piece and (prefer + "\n").startswith(line + piece):
                    scores[t] += 3.0
                elif piece and also and (also + "\n").startswith(line + piece):
                    scores[t] += 1.0
        out = proc(np.asarray([ids]), scores[None, :])[0]
        ids.append(int(out.argmax()) if token is None else token)
    raise AssertionError(f"no Plan: line within 90 tokens: {tokenizer.decode(ids[len(prompt):])!r}")


def test_a_step_of_a_task_with_goals_describes_its_goal(tiny_tokenizer):
    """The shipped planner's misses: "Task: book a table ... Next, save that to report.md as well as
    find typescript code ..." began with the save; "... and get the details of Inception, and
    translate it into French." was one step. With two goals or more, step k's Plan: line leans
    towards goal k's first word, and towards a "." once it has written the goal's last words."""
    goals = ("book a table", "get the details of Inception", "translate it into French")
    one = "Plan: Book a table.\n#E1 = llm[x]\nPlan: "
    save, book = "Save the table to report.", "Book a table."
    assert _plan_line(tiny_tokenizer, "Plan: ", goals, save, also=book) == book
    assert _plan_line(tiny_tokenizer, "Plan: ", goals, save, also=book, weight=0.0) == save
    merged = "Get the details of Inception, and translate it into French."
    assert _plan_line(tiny_tokenizer, one, goals, merged, also="Get the details of Inception.") == \
        "Get the details of Inception."
    assert _plan_line(tiny_tokenizer, one, goals, merged, weight=0.0) == merged
    # one goal: the lines are the model's (a one-goal task is often planned in steps of other words:
    # "Who is older, A or B?" as two lookups)
    assert _plan_line(tiny_tokenizer, "Plan: ", ("book a table",), save, also=book) == save
    # past the last goal, and on a goal that does not open on a verb: the model's words
    three = one + "Get the details of Inception.\n#E2 = llm[y]\nPlan: Translate it into French.\n#E3 = llm[z]\nPlan: "
    assert _plan_line(tiny_tokenizer, three, goals, "Save it.") == "Save it."
    assert _plan_line(tiny_tokenizer, one, ("book a table", "the rest of it"), "Save it.") == "Save it."


FILMS = {"query_sql": {"Martin Scorsese", "The Dark Knight", "The Dark Knight Rises", "Hero", "Get Out",
                       "Schindler's List", "Jurassic Park"}}


@pytest.mark.parametrize("task, held", [
    ("When was Martin Scorsese born?", [("query_sql", "Martin Scorsese")]),
    ("who's the director of jurassic park", [("query_sql", "Jurassic Park")]),  # long: any case
    ("release year for The Dark Knight Rises pls", [("query_sql", "The Dark Knight Rises")]),  # the longest
    ("Is The Dark Knight older than The Dark Knight Rises?",
     [("query_sql", "The Dark Knight"), ("query_sql", "The Dark Knight Rises")]),
    ("which year was Schindler's List made", [("query_sql", "Schindler's List")]),
    ("Find out who directed Hero and write the name into hero.txt.", [("query_sql", "Hero")]),
    ("Who was the hero of the film?", []),  # short: only in the data's own case
    ("how do I get out of vim", []),
    ("Martin Scorseseish films", []),  # word bounds
    ("Tell me about Heroes of the Storm.", []),
])
def test_task_holdings_are_the_values_of_a_tools_data_the_task_names(task, held):
    assert list(task_holdings(task, FILMS)) == held


# The plan the shipped planner wrote for data/eval/in_distribution.jsonl born-0, and the one its data
# teaches for a director of the film database.
WIKI_LINE = "Use search_wiki to search the encyclopedia for Martin Scorsese."
SQL_LINE = "Use query_sql to look up the birth year of Martin Scorsese."
HELD_TOOLS = {"search_wiki": "Search the encyclopedia and return the top 3 results.",
              "query_sql": "Run one SQL statement (read-only, SQLite) on the film database. Tables: "
                           "films(title, year, director), directors(name, birth_year, birthplace).",
              "llm": CATALOG["llm"]}


def test_a_step_about_a_value_a_tool_holds_is_led_to_that_tool(tiny_tokenizer):
    """data/eval/in_distribution.jsonl born-0..3: "When was Martin Scorsese born?" was planned
    "Use search_wiki to search the encyclopedia for Martin Scorsese." four times out of four; the film
    database holds the name (QuerySQLTool.held_values). A Plan: line that opens "Use" leans towards
    the tool that holds a value the task names and no earlier step has written."""
    held = (("query_sql", "Martin Scorsese"),)
    goals = ("When was Martin Scorsese born",)
    assert _plan_line(tiny_tokenizer, "Plan: ", goals, WIKI_LINE, 8.0, SQL_LINE, held, HELD_TOOLS) == SQL_LINE
    assert _plan_line(tiny_tokenizer, "Plan: ", goals, WIKI_LINE, 8.0, SQL_LINE, (), HELD_TOOLS) == WIKI_LINE
    assert _plan_line(tiny_tokenizer, "Plan: ", goals, WIKI_LINE, 0.0, SQL_LINE, held, HELD_TOOLS) == WIKI_LINE
    # a value an earlier step has written is done: the next line is the model's
    done = "Plan: Use query_sql to look up Martin Scorsese.\n#E1 = query_sql[SELECT 1 WHERE 'Martin Scorsese']\nPlan: "
    assert _plan_line(tiny_tokenizer, done, goals, WIKI_LINE, 8.0, SQL_LINE, held, HELD_TOOLS) == WIKI_LINE
    # the task says which tool in words that fit another tool better: not led
    said = ("Look up Martin Scorsese in the encyclopedia",)
    assert ToolPrior(tuple(HELD_TOOLS.items()), 8.0, said, held).leads == ()
    assert _plan_line(tiny_tokenizer, "Plan: ", said, WIKI_LINE, 8.0, SQL_LINE, held, HELD_TOOLS) == WIKI_LINE
    # goals not read: the value alone decides (it fits no tool's words)
    assert ToolPrior(tuple(HELD_TOOLS.items()), 8.0, (), held).leads == held


def test_a_prior_refuses_holds_of_tools_it_does_not_list():
    with pytest.raises(ValueError, match="holds"):
        ToolPrior(tuple(CATALOG.items()), 4.0, (), (("query_sql", "Hero"),))
    with pytest.raises(ValueError, match="holds"):
        ToolPrior(tuple(CATALOG.items()), 4.0, (), (("llm", " "),))


def test_a_prior_needs_a_weight_of_zero_or_more():
    with pytest.raises(ValueError, match=">= 0"):
        ToolPrior(tuple(CATALOG.items()), -1.0)
    with pytest.raises(ValueError, match=">= 0"):
        ToolPrior(tuple(CATALOG.items()), float("nan"))


def _decode_name(tokenizer, vocab_size, text_before: str, weight: float, prefer: str, with_grammar: bool,
                 sentencepiece: bool = False):
    """Feed ``text_before`` (the plan so far, ending on a step head) through the processor token by
    token, then decode the tool name greedily (at most 40 tokens) from scores that prefer ``prefer`` by 3 logits; the name."""
    tools = list(CATALOG)
    inner = constrain.logits_processor(tokenizer, vocab_size, grammar=constrain.plan_grammar(tools, 2048)) \
        if with_grammar else None
    decode = tokenizer.decode
    if sentencepiece:  # as a SentencePiece tokenizer decodes one token: without its leading space
        def decode(ids):
            return tokenizer.decode(ids) if len(ids) > 1 else tokenizer.decode(ids).lstrip(" ")
    proc = ToolPriorProcessor(decode, [ToolPrior(tuple(CATALOG.items()), weight)], inner=inner)
    prompt = tokenizer("### Response:\n", add_special_tokens=False)["input_ids"]
    ids = list(prompt)
    scripted = tokenizer(text_before, add_special_tokens=False)["input_ids"]
    for token in scripted + [None] * 40:
        scores = np.zeros(vocab_size, dtype=np.float32)
        # the "model": it likes the pieces of `prefer` that continue what is written
        written = tokenizer.decode(ids[len(prompt):]).split("=")[-1] if "=" in tokenizer.decode(ids[len(prompt):]) else None
        if written is not None:
            for t in range(len(tokenizer)):
                piece = tokenizer.decode([t])
                if piece and (" " + prefer + "[").startswith(written + piece):
                    scores[t] += 3.0
        out = proc(np.asarray([ids]), scores[None, :].copy())[0]
        ids.append(int(out.argmax()) if token is None else token)
        if token is None:
            rest = tokenizer.decode(ids[len(prompt):]).rsplit("=", 1)[1]
            if "[" in rest:
                return rest.split("[")[0].strip(), proc
    raise AssertionError(f"no name within 40 tokens: {tokenizer.decode(ids[len(prompt):])!r}")


@pytest.mark.parametrize("with_grammar", [False, True])
def test_the_prior_turns_the_name_to_the_tool_the_step_describes(tiny_tokenizer, with_grammar):
    # The shipped planner's miss on data/eval/unseen_tools.jsonl: "Get the latest results of New York
    # Yankees." planned with llm, sports_scores in the list.
    vocab = len(tiny_tokenizer)
    head = "Plan: Get the latest results of New York Yankees.\n#E1 ="
    name, _ = _decode_name(tiny_tokenizer, vocab, head, 0.0, "llm", with_grammar)
    assert name == "llm"  # without the prior: the model's choice
    name, proc = _decode_name(tiny_tokenizer, vocab, head, 5.0, "llm", with_grammar)
    assert name == "sports_scores"
    assert list(proc.shifted.values()) == [("Get the latest results of New York Yankees.", "sports_scores")]
    # a weak prior does not overrule a model that is sure
    name, _ = _decode_name(tiny_tokenizer, vocab, head, 1.0, "llm", with_grammar)
    assert name == "llm"
    # tokens decoded alone without their leading space (SentencePiece) spell the same names
    name, _ = _decode_name(tiny_tokenizer, vocab, head, 5.0, "llm", with_grammar, sentencepiece=True)
    assert name == "sports_scores"


def test_the_prior_leaves_a_step_without_matching_words_and_the_rest_of_the_text(tiny_tokenizer):
    vocab = len(tiny_tokenizer)
    name, proc = _decode_name(tiny_tokenizer, vocab, "Plan: Do it now.\n#E1 =", 50.0, "llm", True)
    assert name == "llm" and proc.shifted == {}
    # a later step: its own Plan: line decides, not the first one's
    head = "Plan: Do it now.\n#E1 = llm[x]\nPlan: Detect the language of it.\n#E2 ="
    name, _ = _decode_name(tiny_tokenizer, vocab, head, 5.0, "translate_text", True)
    assert name == "detect_language"
    # inside a description or an input the scores are untouched
    proc = ToolPriorProcessor(tiny_tokenizer.decode, [ToolPrior(tuple(CATALOG.items()), 50.0)])
    ids = tiny_tokenizer("P", add_special_tokens=False)["input_ids"]
    proc(np.asarray([ids]), np.zeros((1, vocab), dtype=np.float32))
    for text in ("Plan: Detect the language", "Plan: Detect the language.\n#E1 = llm[Detect"):
        more = ids + tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert not proc(np.asarray([more]), np.zeros((1, vocab), dtype=np.float32)).any()


def test_the_prior_reaches_the_constraint_from_pipeline_and_make_plan(tiny_model_dir, monkeypatch):
    from pipeline.engines import TransformersEngine
    from pipeline.planner import make_plan, planner_request
    from pipeline.rewoo import Pipeline
    from toolkit import default_toolbox
    from toolkit.tool import tool

    @tool
    def sports_scores(team: str) -> str:
        """Get the latest results of a sports team.

        Args:
            team: the team
        """
        return f"{team} won"

    @tool
    def llm(prompt: str) -> str:
        """A language model.

        Args:
            prompt: the instruction
        """
        return "ok"

    box = {"sports_scores": sports_scores, "llm": llm}
    engine = TransformersEngine(str(tiny_model_dir), max_new_tokens=64)
    req = planner_request("Get the latest Yankees results.", box, engine, tool_prior=4.0)
    prior = req.constraint.tool_prior
    assert prior.weight == 4.0 and dict(prior.tools)["sports_scores"] == "Get the latest results of a sports team."
    assert prior.goals == ("Get the latest Yankees results",)  # the goals the task states (task_goals)
    two = planner_request("Get the latest Yankees results, then summarize them.", box, engine, tool_prior=4.0)
    assert two.constraint.tool_prior.goals == ("Get the latest Yankees results", "summarize them")
    from pipeline.plan import Plan, Step
    history = (Plan((Step("#E1", "sports_scores", "Yankees", "Get the results."),)), {"#E1": "ok"})
    again = planner_request("Get the latest Yankees results, then summarize them.", box, engine, tool_prior=4.0,
                            history=history)
    assert again.constraint.tool_prior.goals == ()  # a replanning round continues a plan: not read
    # the values a tool's own data holds (QuerySQLTool.held_values), as the task names them
    sql = default_toolbox(workspace=str(tiny_model_dir.parent))["query_sql"]
    films = {**box, "query_sql": sql}
    held = planner_request("When was Martin Scorsese born? And Hero?", films, engine, tool_prior=4.0)
    assert held.constraint.tool_prior.holds == (("query_sql", "Martin Scorsese"), ("query_sql", "Hero"))
    assert planner_request("When was Martin Scorsese born?", films, engine, tool_prior=4.0,
                           history=history).constraint.tool_prior.holds == ()
    unheld = planner_request("When was Martin Scorsese born?", box, engine, tool_prior=4.0)
    assert unheld.constraint.tool_prior.holds == ()  # no tool of the list holds data
    assert planner_request("x", box, engine).constraint.tool_prior is None  # 0: off
    assert planner_request("x", box, engine, tool_prior=4.0, constrain=False).constraint is None
    plan, raw = make_plan("Get the latest Yankees results.", box, engine, max_new_tokens=96, tool_prior=4.0)
    assert all(s.tool in box for s in plan)  # the random model still writes a valid plan under the prior
    with pytest.raises(ValueError, match="tool_prior"):
        Pipeline(engine, None, engine, box, tool_prior=-1)
    seen = []
    for method in ("complete", "complete_stream"):  # streamed or not, whichever the pipeline takes
        real = getattr(engine, method)

        def spy(prompt, stop_sequences=None, max_new_tokens=None, temperature=None, constraint=None, real=real):
            seen.append(constraint)
            return real(prompt, stop_sequences, max_new_tokens, temperature, constraint)

        monkeypatch.setattr(engine, method, spy)
    Pipeline(engine, None, engine, box, tool_prior=3.0, replan=0, planner_max_new_tokens=96).run("Yankees results?")
    assert seen and seen[0].tool_prior is not None and seen[0].tool_prior.weight == 3.0


def test_the_flag_sets_the_prior_over_the_demos_setting_and_refuses_bad_values():
    from pipeline.chat import build_parser as chat_parser
    from pipeline.eval import build_parser as eval_parser
    from pipeline.run import build_parser, pipeline_settings
    from pipeline.usage import UsageError

    demo = {"pipeline": {"planner_max_new_tokens": 512, "max_steps": 4, "replan": 0, "tool_prior": 4.0}}
    assert pipeline_settings(build_parser().parse_args(["x"]), demo)["tool_prior"] == 4.0
    assert pipeline_settings(build_parser().parse_args(["x", "--tool-prior", "0"]), demo)["tool_prior"] == 0.0
    assert pipeline_settings(build_parser().parse_args(["x", "--tool-prior", "2.5"]), None)["tool_prior"] == 2.5
    assert "tool_prior" not in pipeline_settings(build_parser().parse_args(["x"]), None)  # Pipeline's 0
    assert pipeline_settings(chat_parser().parse_args(["--tool-prior", "1"]), demo)["tool_prior"] == 1.0
    assert pipeline_settings(eval_parser().parse_args(["--tasks", "t.jsonl", "--tool-prior", "3"]), demo)["tool_prior"] == 3.0
    for bad in ("-1", "nan", "inf"):
        with pytest.raises(UsageError, match="--tool-prior"):
            pipeline_settings(build_parser().parse_args(["x", "--tool-prior", bad]), demo)


@pytest.mark.parametrize("entry", [["pipeline.run", "x"], ["pipeline.eval", "--tasks", "data/eval/in_distribution.jsonl"],
                                   ["pipeline.chat"]])
def test_a_bad_tool_prior_is_one_line_and_exit_2(entry):
    import subprocess
    import sys
    from pathlib import Path

    r = subprocess.run([sys.executable, "-m", *entry, "--tool-prior", "-2"], capture_output=True, text=True,
                       timeout=120, cwd=Path(__file__).resolve().parent.parent, stdin=subprocess.DEVNULL)
    assert r.returncode == 2, r.stderr[-1000:]
    assert r.stderr.strip() == "error: --tool-prior must be a number of logits >= 0, got -2"
