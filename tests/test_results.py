"""The results page is regenerated from records of experiment workdirs, and every number it (and the README's result
sections) prints is in a record.

Fixture: a smoke run of the demo and baselines (results_fixture/demo), its record (results_fixture/records/demo.json)
and the page rendered from that record (expected.md). After a deliberate change of the record or page format:
  python -m learngene_jax.results record --workdir tests/data/results_fixture/demo --base tests/data/results_fixture \
      --records tests/data/results_fixture/records
  python -m learngene_jax.results --records tests/data/results_fixture/records \
      --out tests/data/results_fixture/expected.md
"""

import json
import re

import pytest
from conftest import DATA, REPO, run_module

from learngene_jax import cli, records, results

FIXTURE = DATA / "results_fixture"
DOCS_RECORDS = REPO / "docs" / "records"
DOCS_PAGE = REPO / "docs" / "results.md"
# Every page of the README and the docs (docs/results.md is checked above) and the records its measured numbers must
# come from (a page not named here quotes no measurement). Per page rather than all records at once: a 2-decimal
# number matches some value of a large record by chance.
_AUTO = [f"auto_vgg_seed{s}" for s in range(3)]
_LGPOOL = [f"lgpool_digits_seed{s}" for s in range(3)]
PAGE_RECORDS = {"README.md": ["seeds"], "docs/index.md": ["seeds"], "docs/getting-started.md": ["seeds"],
                "docs/methods/heur-auto.md": _AUTO, "docs/methods/lgpool.md": _LGPOOL,
                "docs/language-models.md": ["lm_demo", "nanogpt_shakespeare_char_ab"],
                "docs/methods/asvit.md": ["asvit_digits", "asvit_digits_retok0", "asvit_retok_flops"],
                "docs/benchmarks.md": ["cpu_bench", "asvit_retok_flops"]}
# Numbers on those pages that are no measurement of this project, each with the reason.
NOT_MEASURED = {"1.3": "DeiT-Ti FLOPs (G) as DeiT publishes them", "4.6": "DeiT-S FLOPs (G), DeiT's number",
                "17.6": "DeiT-B FLOPs (G), DeiT's number", "13.2": "As-ViT paper's stride-16 FLOP share",
                "28.5": "As-ViT paper's stride-8 FLOP share", "5.23": "the transformers version tested against",
                "3.11": "the Python version required", "2.13": "the torch version pinned (2.13.0)",
                "2.35": "the glibc version with the malloc hugetlb tunable", "2305.02279": "an arXiv id",
                "1,200": "images make_folder writes (--count 1200)",
                "0.99996": "the official code's EMA decay, named as a deviation",
                "1.88": "nanoGPT README's Shakespeare-char CPU loss",
                "150,528": "arithmetic: bytes of a 224×224×3 uint8 image", "602,112": "the same image as float32"}
# Facts a test asserts: number as printed → (test file, the literal the test holds, its value in the printed unit).
ASSERTED = {"2,319,624": ("tests/test_asvit.py", "2_319_624", 2_319_624),
            "87,580,820": ("tests/test_asvit.py", "87_580_820", 87_580_820),
            "0.49": ("tests/test_asvit.py", "491_595_264", 0.491_595_264),  # seed MACs in G
            "22.36": ("tests/test_asvit.py", "22_358_480_640", 22.358_480_640),  # Large MACs in G
            "1,347": ("tests/test_data.py", "1347", 1347)}  # digits train split
# Pages whose numbers are settings of shipped configs: every number on them is a value of one of the configs.
CONFIG_PAGES = {"docs/snippets/imagenet-recipe.md": ["configs/tleg_s.py", "configs/sws_s.py"],
                "docs/training.md": ["configs/tleg_s.py", "configs/sws_s.py"],
                "docs/interop.md": ["configs/tleg_s.py"], "docs/changelog.md": ["configs/tleg_s.py"]}
COMMIT = {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False}


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def _stage(workdir, name, top1, wall, config):
    _write(workdir / name / "final.json", {"name": name, "top1": top1, "steps": 30, "wall_s": wall})
    _write(workdir / name / "config.json", config)


def fake_demo(root):
    """A demo workdir as the demo writes it, tiny: summary.json (with a 300-step curve), two stages, commands."""
    w = root / "demo_fake"
    row = {"depth": 1, "tleg": {"gene_params": 27_882, "init_top1": 0.5012, "top1": 0.6144, "epochs": 1},
           "scratch_x1": {"params": 15_178, "top1": 0.4021}, "scratch_x3": {"params": 15_178, "top1": 0.5533}}
    _write(w / "summary.json", {"descendants": [row], "total_s": 41.27, "loss_curve": [0.5] * 300})
    config = {"name": "teacher", "seed": 3, "model": {"name": "cnn", "width": 32}, "optim": {"lr": 0.001}}
    _stage(w, "teacher", 0.9733, 12.4, config)
    _stage(w, "tleg_L1", 0.6144, 2.5, {**config, "name": "tleg_L1", "model": {"name": "descendant"},
                                       "gene": "runs/demo_fake/tleg_aux/gene"})
    _write(w / "commands.txt", "python -m learngene_jax.main --config=configs/demo.py --workdir=runs/demo_fake\n")
    _write(w / "notes.md", "# Notes\n\nScratch after 3 epochs: 0.553.\n")
    _write(w / "summary.md", "regenerated from summary.json, so not in the record")
    return w


def fake_auto(root):
    """An Auto Learngene workdir: summary.json + the summary.md the page shows, one descendant stage."""
    w = root / "auto_fake"
    _write(w / "summary.json", {"method": "auto", "descendants": [{"task": "t0", "auto": {"top1": 0.9286}}],
                                "accuracy": {"auto": {"mean": 0.9286, "std": 0.0331, "n": 1}}, "total_s": 240.9,
                                "genes": {"auto": {"blocks": [9, 10, 11], "params": 1294}}})
    _write(w / "summary.md", "# Auto Learngene (1 inheritable tasks)\n\n| task | Auto gene |\n|---|---|\n"
                             "| t0 | 0.929 |\n\n## Genes\n\n- auto: blocks [9, 10, 11] (1,294 params)\n")
    _stage(w, "descendants/t0/auto", 0.9286, 3.1, {"name": "auto_t0", "seed": 0, "ewc": {"lam": 40.0}})
    return w


def fake_seeds(root):
    """A seeds workdir (learngene_jax.seeds): seeds.json, each seed's summary.json and stages, no top summary."""
    w = root / "seeds_fake"
    _write(w / "seeds.json", {
        "seeds": [0, 1], "workdirs": {"0": "seed0", "1": "seed1"},
        "rows": [{"depth": 2, "quantity": "TLEG 1 ep", "mean": 0.894, "std": 0.0092, "values": [0.8844, 0.9022]}],
        "claim": {"statement": "a gene descendant after 1 epoch beats scratch after 3 epochs at every depth",
                  "methods": {"TLEG": {"holds_in": 2, "seeds": 2, "per_seed": {
                      "0": {"holds": True, "fails_at_depths": []}, "1": {"holds": True, "fails_at_depths": []}}}}},
        "stage_s": {"0": 615.2, "1": 543.4}, "wall_s": 1659.3})
    for seed, top1 in ((0, 0.8844), (1, 0.9022)):
        _write(w / f"seed{seed}" / "summary.json", {"descendants": [], "total_s": 600.0 + seed})
        _stage(w / f"seed{seed}", "tleg_L2", top1, 3.2, {"name": "tleg_L2", "seed": seed})
    return w


def test_page_renders_from_the_committed_fixture_record(tmp_path):
    out = tmp_path / "results.md"
    results.main(["--records", str(FIXTURE / "records"), "--out", str(out)])
    assert out.read_text() == (FIXTURE / "expected.md").read_text()


def test_fixture_record_holds_what_its_workdir_holds():
    committed = records.load(FIXTURE / "records" / "demo.json")
    fresh = records.from_workdir(FIXTURE / "demo", FIXTURE)
    for key in ("files", "markdown", "config", "commands", "workdir"):
        assert committed[key] == fresh[key], key


def test_page_sections_trace_to_records_configs_and_commands(tmp_path):
    out = tmp_path / "results.md"
    run_module("learngene_jax.results", "--workdir", str(FIXTURE / "demo"), "--base", str(FIXTURE), "--out", str(out))
    page = out.read_text()
    assert "python -m learngene_jax.main --config=configs/demo.py:smoke=True" in page
    assert "| tleg_aux | 0.1000 | 21 |" in page and "`demo/tleg_aux/config.json`" in page
    assert "| 2 | pre-train → fine-tune | 27,882 | 27,882 |" in page
    assert "| qkv/kernel | 4 | 0.3539 | 0.3286 |" in page
    assert "- Record: [`records/demo.json`](records/demo.json)" in page
    assert "- Wall time: 80 s (summary.json total_s + comparison.json total_s)" in page
    assert re.search(r"^- Commit: `[0-9a-f]{12}`", page, re.M) and re.search(r"^- Machine .*, \d+ cores, ", page, re.M)


def test_record_then_render_equals_render_from_workdirs(tmp_path, monkeypatch):
    """(a) A record holds everything the page needs: rendered from records alone, the page is byte for byte the
    one rendered from the workdirs, for a demo workdir and for a summary shown through its summary.md."""
    monkeypatch.setattr(records, "git_commit", lambda: COMMIT)  # a commit landing mid-test must not flake it
    workdirs = [fake_auto(tmp_path), fake_demo(tmp_path), fake_seeds(tmp_path)]  # sorted by name
    store = tmp_path / "records"
    for w in workdirs:
        results.main(["record", "--workdir", str(w), "--base", str(tmp_path), "--records", str(store)])
    assert sorted(p.name for p in store.iterdir()) == ["auto_fake.json", "demo_fake.json", "seeds_fake.json"]
    from_records, from_workdirs = tmp_path / "a.md", tmp_path / "b.md"
    results.main(["--records", str(store), "--out", str(from_records)])
    results.main([x for w in workdirs for x in ("--workdir", str(w))] + ["--base", str(tmp_path), "--out",
                                                                         str(from_workdirs)])
    page = from_records.read_text()
    assert page == from_workdirs.read_text()
    assert records.check_numbers_in_records(page, records.load_all(store)) == []  # (c) on every kind of section
    assert "| seed1/tleg_L2 | 0.9022 | 30 | 3.2 | `seeds_fake/seed1/tleg_L2/config.json` |" in page
    assert "- Wall time: 1659 s (seeds.json wall_s)\n- Seeds (config.seed): 0, 1\n" in page
    assert "| 2 | TLEG 1 ep | 0.894 ± 0.009 | 0.884 | 0.902 |" in page
    assert records.load(store / "seeds_fake.json")["files"]["seed1/summary.json"]["total_s"] == 601.0
    assert "### Learngene demo (from `summary.json`)" in page and "| 1 | 15,178 | 27,882 | 0.501 → 0.614 |" in page
    assert "### From `auto_fake/summary.md`\n\n#### Auto Learngene" in page and "##### Genes" in page
    assert "### From `demo_fake/notes.md`" in page and "regenerated from summary.json" not in page
    assert "| descendants/t0/auto | 0.9286 | 30 | 3.1 | `auto_fake/descendants/t0/auto/config.json` |" in page
    assert "- Commit: `0123456789ab`\n" in page and "- Seeds (config.seed): 3\n" in page
    results.main(["--records", str(store), "seeds_fake", "demo_fake.json", "--out", str(from_records)])
    sections = re.findall(r"^## `(.+)`$", from_records.read_text(), re.M)
    assert sections == ["seeds_fake", "demo_fake"]


def test_record_format(tmp_path, monkeypatch):
    """The record's keys, provenance, config diffs (rebuilt exactly) and the left-out per-step array."""
    monkeypatch.setattr(records, "git_commit", lambda: COMMIT)
    demo = fake_demo(tmp_path)
    results.main(["record", "--workdir", str(demo), "--name", "demo_x", "--records", str(tmp_path / "r")])
    path = tmp_path / "r" / "demo_x.json"
    record = records.load(path)
    assert path.stat().st_size < results.OVER_SIZE
    assert set(record) == {"format", "name", "workdir", "commands", "provenance", "config", "files", "markdown"}
    assert record["name"] == "demo_x" and record["commands"].startswith("python -m learngene_jax.main")
    assert sorted(record["files"]) == ["summary.json", "teacher/final.json", "tleg_L1/final.json"]
    assert record["markdown"] == {"notes.md": "# Notes\n\nScratch after 3 epochs: 0.553.\n"}
    assert record["files"]["summary.json"]["loss_curve"] == {"left_out": "300 values (an array the results page "
                                                                          "does not print)"}
    p = record["provenance"]
    assert p["commit"] == COMMIT["commit"] and p["dirty"] is False and p["seeds"] == [3]
    assert p["wall"] == {"seconds": 41.3, "source": "summary.json total_s"}
    assert {"cpu", "cores", "memory_gib", "os", "python", "jax", "jaxlib", "flax", "backend", "devices"} <= set(
        p["machine"])
    assert record["config"]["of"] == "teacher" and record["config"]["stages"]["teacher"] == {}
    assert record["config"]["stages"]["tleg_L1"] == {
        "set": {"name": "tleg_L1", "model.name": "descendant", "gene": "runs/demo_fake/tleg_aux/gene"},
        "removed": ["model.width"]}
    for stage in ("teacher", "tleg_L1"):
        assert records.stage_config(record, stage) == json.loads((demo / stage / "config.json").read_text())


def test_config_diff_round_trips_odd_configs():
    full = {"a": {"b": 1, "c": {}}, "d": [1, 2], "e": 1}
    for config in ({"a": {"b": True, "c": {"x": 2}}, "d": [1], "e": 1.0}, {"a": 3}, {}, {"k.dotted": 1}):
        record = {"config": {"full": full, "stages": {"s": records.config_diff(full, config)}}}
        assert records.stage_config(record, "s") == config


def test_git_commit_names_this_checkout():
    commit = records.git_commit()
    assert re.fullmatch(r"[0-9a-f]{40}", commit["commit"]) and isinstance(commit["dirty"], bool)


def test_check_numbers_in_records():
    """(d) The numbers a text prints that no record holds, compared as the page formats numbers."""
    record = {"files": {"summary.json": {"top1": 0.92912, "params": 1294, "sum": 22.43, "std": 0.0331,
                                         "gene_params": 3_573_706, "share": 0.125, "delta": -0.05}},
              "commands": "python x.py --config.lr=0.005", "markdown": {"summary.md": "top-1 0.777"}}
    text = ("Auto 0.929 ± 0.033 with 1,294 params; window sum 22.4; 3.6 M params; 12.5% of it; lr 0.005; "
            "-0.05 after; jax 0.4.35, glibc2.35, 2.20GHz; 9.99 and 0.777 are in no JSON; 0.93 rounds; 4,5 is a list.")
    assert records.check_numbers_in_records(text, [record]) == ["9.99", "0.777"]


def test_every_number_on_the_fixture_page_is_in_its_record():
    """(c) on the fixture page."""
    page = (FIXTURE / "expected.md").read_text()
    assert records.page_numbers(page) and records.check_numbers_in_records(
        page, records.load_all(FIXTURE / "records")) == []


def _docs_page_records():
    if not list(DOCS_RECORDS.glob("*.json")):
        pytest.skip(f"no records in {DOCS_RECORDS.relative_to(REPO)} yet (python -m learngene_jax.results record)")
    page = DOCS_PAGE.read_text()
    names = re.findall(r"^- Record: \[`records/([^`]+)\.json`\]", page, re.M)
    assert names, (f"{DOCS_PAGE.relative_to(REPO)} names no record: regenerate it with "
                   f"`python -m learngene_jax.results --records docs/records`")
    return page, records.load_all(DOCS_RECORDS, names)


def test_docs_results_page_is_rendered_from_docs_records():
    """(b) docs/results.md is exactly what its records (those it names, in its order) render today."""
    page, page_records = _docs_page_records()
    assert results.render(page_records) == page


def test_every_number_on_docs_results_page_is_in_its_records():
    """(c) on docs/results.md."""
    page, page_records = _docs_page_records()
    assert records.check_numbers_in_records(page, page_records) == []


def docs_pages():
    """The README and every docs page but the generated results page, relative to the repository."""
    return ["README.md"] + sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md")
                                  if p.name != "results.md")


def prose(text):
    """`text` without its fenced code blocks (commands and their arguments are no quoted results)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def config_numbers(paths):
    """Every number in the configs at `paths` (leaves, list items), as floats."""
    from learngene_jax.config_lib import load_config

    values = []

    def walk(value):
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            values.append(float(value))

    for path in paths:
        walk(load_config(REPO / path).to_dict())
    return values


def test_every_number_in_the_readme_and_docs_traces_to_a_record():
    """(d) Every number the README and the docs print (decimals, thousands separators; outside code blocks) is in a
    record its page names, a setting of a shipped config (recipe pages), a fact a test asserts, or no measurement of
    this project with its reason (NOT_MEASURED)."""
    if not list(DOCS_RECORDS.glob("*.json")):
        pytest.skip("no records yet")
    missing = []
    for page in docs_pages():
        text = prose((REPO / page).read_text())
        found = records.check_numbers_in_records(text, records.load_all(DOCS_RECORDS, PAGE_RECORDS[page])
                                                 if page in PAGE_RECORDS else [])
        settings = config_numbers(CONFIG_PAGES.get(page, []))
        for number in found:
            if number in NOT_MEASURED or number in ASSERTED:
                continue
            value = float(number.replace(",", ""))
            if not any(abs(value - v) <= 1e-12 * max(1.0, abs(v)) for v in settings):
                missing.append(f"{page}: {number}")
    assert missing == [], f"numbers in no record, config or test (add the record, or the reason): {missing}"


@pytest.mark.parametrize("number", sorted(ASSERTED))
def test_asserted_facts_are_in_their_tests(number):
    """The facts ASSERTED lets pages print are what the named test holds, rounded as printed."""
    path, literal, value = ASSERTED[number]
    assert literal in (REPO / path).read_text(), f"{path} no longer holds {literal}"
    decimals = len(number.split(".")[1]) if "." in number else 0
    assert f"{value:,.{decimals}f}" == number


def test_unused_allowances_are_dropped():
    """Every NOT_MEASURED and ASSERTED number is still printed somewhere: an allowance outlives no page."""
    printed = {n for page in docs_pages() for n in records.page_numbers(prose((REPO / page).read_text()))}
    assert sorted((set(NOT_MEASURED) | set(ASSERTED)) - printed) == []


@pytest.mark.parametrize("case", ["no_workdir", "empty_workdir", "corrupt_json", "no_records", "unknown_record",
                                  "corrupt_record", "names_with_workdir"])
def test_bad_input_is_one_line(tmp_path, capsys, case):
    store = tmp_path / "records"
    store.mkdir()
    argv, expected = {
        "no_workdir": (["record", "--workdir", str(tmp_path / "nope")], f"no workdir at {tmp_path / 'nope'}"),
        "empty_workdir": (["record", "--workdir", str(store)], f"nothing to record in {store}"),
        "corrupt_json": (["record", "--workdir", str(tmp_path / "w")], f"{tmp_path / 'w' / 'summary.json'} is not "
                                                                       "valid JSON"),
        "no_records": (["--records", str(store)], f"no records in {store}: write one with"),
        "unknown_record": (["--records", str(tmp_path / "full"), "b"], "no record named b in"),
        "corrupt_record": (["--records", str(tmp_path / "bad")], "bad.json is not valid JSON"),
        "names_with_workdir": (["--workdir", str(tmp_path / "w"), "b"], "record names (b) go with --records DIR"),
    }[case]
    _write(tmp_path / "w" / "summary.json", '{"descendants": [')
    _write(tmp_path / "full" / "a.json", {"format": records.FORMAT})
    _write(tmp_path / "bad" / "bad.json", "{")
    with pytest.raises(SystemExit) as exit_:
        cli.run(results.main, [*argv, "--out", str(tmp_path / "r.md")] if argv[0] != "record" else argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and expected in err and err.count("\n") == 1


def test_missing_workdir_is_one_line(tmp_path):
    proc = run_module("learngene_jax.results", "--workdir", str(tmp_path / "nope"), "--out", str(tmp_path / "r.md"),
                      check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: no workdir at {tmp_path / 'nope'}"
