"""The listing commands through the real CLI: `falw-ray baselines list|prune` on a real store,
`falw-ray methods`, and `falw-ray validate` showing a study's description."""
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from falw_ray.baselines import Trained
from falw_ray.scenario import BASELINE_CODE_VERSION, Scenario
from falw_ray.store import META, BaselineStore
from falw_ray.store_admin import human_age, human_size

REPO = Path(__file__).resolve().parent.parent
DAY = 86400


def cli(*args: str, cwd: Path | None = None, columns: int = 100) -> subprocess.CompletedProcess:
    """The CLI in its own process, on a terminal ``columns`` wide (COLUMNS)."""
    return subprocess.run([sys.executable, "-m", "falw_ray.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd or REPO, env={**os.environ, "COLUMNS": str(columns)})


def weights(value: float) -> Trained:
    return Trained({"w": np.full((50, 50), value, dtype=np.float32)}, seconds=1.0)


def size_of(folder: Path) -> str:
    return human_size(sum(p.stat().st_size for p in folder.iterdir()))


@pytest.fixture
def store(tmp_path):
    """Five entries: a current pair (digits, seed 2, written 3 days ago), a current mnist1d entry with
    options (1 day), an entry from before versions (no code_version, no created: its meta.json's
    time, 10 days) and one from another code version (20 days)."""
    root = tmp_path / "baselines"
    st = BaselineStore(root)
    now = datetime.now(timezone.utc)
    digits = Scenario(dataset="digits", seed=2)
    mnist = Scenario(dataset="mnist1d", data_options={"corr_noise_scale": 0.25}, seed=1,
                     forget={"kind": "random", "ratio": 0.2})

    def save(role, key, s, days, **extra):
        info = {"scenario": s.model_dump(mode="json", exclude={"forget"} if role == "original" else None),
                "created": (now - timedelta(days=days)).isoformat(timespec="seconds"), **extra}
        return st.save(role, key, weights(days), info)

    keys = {"retrained": digits.key(), "original": digits.original_key(), "mnist": mnist.key(),
            "unversioned": "00000000000000aa", "other": "00000000000000bb"}
    save("retrained", keys["retrained"], digits, 3)
    save("original", keys["original"], digits, 3)
    save("retrained", keys["mnist"], mnist, 1)
    old = save("retrained", keys["unversioned"], digits.model_copy(update={"seed": 7}), 0)
    meta = json.loads((old / META).read_text())
    del meta["code_version"], meta["created"]
    (old / META).write_text(json.dumps(meta))
    then = time.time() - 10 * DAY
    os.utime(old / META, (then, then))
    save("original", keys["other"], digits.model_copy(update={"seed": 5}), 20, code_version="2025.06-3")
    (root / "retrained" / f"{keys['retrained']}.lock").touch()  # a lock file is not an entry
    (root / "retrained" / f".{keys['mnist']}.tmp123").mkdir()  # nor a save in progress
    return root, keys


def rows(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines()]


def test_list_shows_every_entry_from_its_meta(store):
    root, keys = store
    proc = cli("baselines", "list", "--store", str(root))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    size = {k: size_of(root / ("original" if k in ("original", "other") else "retrained") / v) for k, v in keys.items()}
    assert rows(proc.stdout)[:-1] == [
        ["role", "key", "dataset", "model", "forget", "seed", "code", "size", "age"],
        ["original", keys["original"], "digits", "cnn", "-", "2", BASELINE_CODE_VERSION, *size["original"].split(), "3d"],
        ["original", keys["other"], "digits", "cnn", "-", "5", "2025.06-3", *size["other"].split(), "20d"],
        ["retrained", keys["retrained"], "digits", "cnn", "lt0.1-g1", "2", BASELINE_CODE_VERSION,
         *size["retrained"].split(), "3d"],
        ["retrained", keys["unversioned"], "digits", "cnn", "lt0.1-g1", "7", "-", *size["unversioned"].split(), "10d"],
        ["retrained", keys["mnist"], "mnist1d-corr_noise_scale0.25", "conv1d", "rand0.2", "1", BASELINE_CODE_VERSION,
         *size["mnist"].split(), "1d"],
    ]
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p.parent.name in keys.values())
    assert proc.stdout.splitlines()[-1] == (f"5 entries, {human_size(total)} in {root.resolve()}; "
                                            f"code version now {BASELINE_CODE_VERSION}, 2 stale")


def test_prune_stale_dry_run_removes_nothing_then_removes_exactly_those(store):
    root, keys = store
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    dry = cli("baselines", "prune", "--store", str(root), "--stale", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    size = {k: size_of(root / r / keys[k]) for k, r in (("other", "original"), ("unversioned", "retrained"))}
    assert dry.stdout.splitlines() == [
        f"would remove original/{keys['other']} (digits cnn s5; code 2025.06-3; {size['other']}; 20d old)",
        f"would remove retrained/{keys['unversioned']} (digits cnn lt0.1-g1 s7; code -; {size['unversioned']}; "
        "10d old)",
        f"would remove 2 entries ({human_size(sum(size_of_bytes(root, keys)))}); 3 would stay in {root.resolve()}",
    ]
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before, "a dry run touches nothing"

    real = cli("baselines", "prune", "--store", str(root), "--stale")
    assert real.returncode == 0, real.stderr
    assert real.stdout.splitlines() == [line.replace("would remove", "removed").replace("would stay", "left")
                                        for line in dry.stdout.splitlines()]
    st = BaselineStore(root)
    assert not st.path("original", keys["other"]).exists() and not st.path("retrained", keys["unversioned"]).exists()
    for role, k in (("retrained", "retrained"), ("original", "original"), ("retrained", "mnist")):
        assert st.load(role, keys[k]) is not None, k
    hidden = sorted(p.name for p in root.rglob(".*") if "removed" in p.name)
    assert hidden == [], "nothing half-removed is left"


def size_of_bytes(root: Path, keys: dict) -> list[int]:
    return [sum(p.stat().st_size for p in (root / r / keys[k]).iterdir())
            for k, r in (("other", "original"), ("unversioned", "retrained"))]


def test_prune_older_than_with_stale_takes_both_filters_and_keeps_an_entry_in_use(store):
    """--older-than 15 --stale: only the 20-day-old entry of another version; with its lock held (being
    built or read) it is kept and said to be in use, and the command still succeeds."""
    root, keys = store
    st = BaselineStore(root)
    with st.lock("original", keys["other"]):
        held = cli("baselines", "prune", "--store", str(root), "--stale", "--older-than", "15")
    assert held.returncode == 0, held.stderr
    lines = held.stdout.splitlines()
    assert lines[0].startswith(f"in use, kept original/{keys['other']} (digits cnn s5; code 2025.06-3;")
    assert lines[1] == f"removed 0 entries (0 B), 1 in use kept; 5 left in {root.resolve()}"
    assert st.load("original", keys["other"]) is not None

    freed = size_of(root / "original" / keys["other"])
    free = cli("baselines", "prune", "--store", str(root), "--older-than", "15")
    assert free.returncode == 0, free.stderr
    assert free.stdout.splitlines()[-1] == f"removed 1 entries ({freed}); 4 left in {root.resolve()}"
    assert not st.path("original", keys["other"]).exists() and st.path("retrained", keys["unversioned"]).exists()


def test_prune_without_a_filter_or_store_is_a_one_line_error(store, tmp_path, capsys):
    """The same handlers as the subprocess calls above, in process (no second torch start-up)."""
    from falw_ray.cli import main

    root, _ = store
    assert main(["baselines", "prune", "--store", str(root)]) == 2
    assert capsys.readouterr() == ("", "falw-ray: say what to prune: --stale, --older-than DAYS, or both\n")
    assert main(["baselines", "list", "--store", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr() == ("", f"falw-ray: no baseline store at {tmp_path / 'nowhere'} "
                                       "(a study's is <storage>/baselines; see --store)\n")
    assert len([p for p in root.glob("*/*") if p.is_dir() and not p.name.startswith(".")]) == 5, "nothing removed"


def test_human_sizes_and_ages():
    assert [human_size(n) for n in (0, 999, 1000, 42_150, 123_456, 5_300_000, 2e9)] == \
        ["0 B", "999 B", "1.0 kB", "42.1 kB", "123 kB", "5.3 MB", "2.0 GB"]
    assert [human_age(s) for s in (0, 59, 60, 3599, 3600, DAY - 1, DAY, 10.4 * DAY)] == \
        ["0s", "59s", "1m", "60m", "1h", "24h", "1d", "10d"]


def test_methods_lists_every_method_and_preset_with_its_parameters_and_options():
    from falw_ray.unlearn import METHODS, PRESETS, TAU

    proc = cli("methods", columns=300)  # wide enough for every row on one line
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    blocks = proc.stdout.split("\n\n")
    assert [b.split(":")[0] for b in blocks[:-1]] == [*METHODS, *PRESETS]
    assert blocks[-1].startswith("In a study, a method's space: fixes a hyperparameter")
    by_name = dict(zip([*METHODS, *PRESETS], blocks))
    assert rows(by_name["retrain"]) == [
        ["retrain:", *"train from scratch on the retain set with the scenario's recipe (the reference every gap is "
                      "taken to)".split()],
        ["from:", "built-in"],
        ["FaLW:", "no", "(no", "forget", "term", "to", "weight)"],
        ["hyperparameter", "default", "range", "searched", "help"],
        ["lr", "0.05", "0.001", "..", "0.5,", "log", "no", *"initial learning rate (default: the scenario recipe's)".split()],
        ["epochs", "30", "1", "..", "500,", "integer", "no",
         *"training epochs, also the schedule's length (default: the scenario recipe's)".split()],
        ["momentum", "0.9", "0", "..", "0.999", "no", *"SGD momentum (default: the scenario recipe's)".split()],
        ["weight_decay", "0.0005", "0", "..", "0.1", "no", *"SGD weight decay (default: the scenario recipe's)".split()],
        ["options:", "none"],
    ]
    falw = by_name["falw"].splitlines()
    assert falw[0] == "falw: preset = salun with FaLW on; schedule mixed"
    assert rows(by_name["falw"])[-2][:4] == ["schedule", "sequential,", "mixed", "mixed"] and "(preset)" in falw[-2]
    for name, m in METHODS.items():
        text = by_name[name]
        assert text.startswith(f"{name}: {m.summary}\n")
        for k, p in {**m.params, **({"tau": TAU} if m.forget_term else {})}.items():
            line = next(line for line in text.splitlines() if line.split()[0] == k)
            assert line.split()[1:4] == [f"{p.default:g}", f"{p.low:g}", ".."], (name, k)
            assert p.help in line
        for k, o in m.options.items():
            line = next(line for line in text.splitlines() if line.split()[0] == k)
            assert ", ".join(o.choices) in line and o.help in line
    schedule = next(line for line in by_name["rl"].splitlines() if line.split()[0] == "schedule")
    assert "sequential on cifar10, else mixed" in schedule


@pytest.mark.parametrize("columns", [100, 80])
def test_methods_fit_the_terminal_and_keep_every_word(columns):
    """Every line within the terminal's width; a help text too long for its column wraps under
    itself (or, on a narrow terminal, goes below its row), each of its words still there in order."""
    from falw_ray.unlearn import METHODS

    proc = cli("methods", columns=columns)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    too_wide = [line for line in proc.stdout.splitlines() if len(line) > columns]
    assert not too_wide, too_wide
    words = proc.stdout.split()
    text = " ".join(words)
    for m in METHODS.values():
        for p in m.params.values():
            assert " ".join(p.help.split()) in text, p.help
        for o in m.options.values():
            assert " ".join(o.help.split()) in text, o.help
    assert "docs/plugins.md how to add one." in text


def test_validate_prints_the_description_under_the_summary(tmp_path):
    text = (REPO / "studies" / "digits.yaml").read_text()
    lines = [line for line in text.splitlines() if not line.startswith("description:")]
    described = tmp_path / "described.yaml"
    words = " ".join(f"word{i}" for i in range(30))
    described.write_text("\n".join(lines + [f"description: >-\n  First line,\n  {words}."]) + "\n")
    bare = tmp_path / "bare.yaml"
    bare.write_text("\n".join(lines) + "\n")
    proc = cli("validate", str(described), str(bare))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0].startswith(f"{described}: valid study 'digits' (")
    wrapped = out[1:-1]
    assert len(wrapped) == 3 and all(line.startswith("  ") and len(line) <= 100 for line in wrapped), wrapped
    assert " ".join(line.strip() for line in wrapped) == f"First line, {words}."
    assert out[-1].startswith(f"{bare}: valid study 'digits' (")


def test_an_entry_with_unreadable_meta_is_listed_as_such_and_is_stale(tmp_path):
    from falw_ray.store_admin import entries, format_entries, select

    st = BaselineStore(tmp_path)
    st.save("original", "good", weights(1.0))
    broken = st.path("original", "broken")
    broken.mkdir()
    (broken / META).write_text("{")
    found = entries(tmp_path)
    assert [(e.key, e.code_version, e.problem.split(" (")[0]) for e in found] == [
        ("broken", "-", "unreadable meta.json"), ("good", BASELINE_CODE_VERSION, "")]
    assert format_entries(found)[1].endswith("(unreadable meta.json (Expecting property name enclosed in double "
                                             "quotes: line 1 column 2 (char 1)))")
    assert [e.key for e in select(found, True, None, BASELINE_CODE_VERSION, time.time())] == ["broken"]
