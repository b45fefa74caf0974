"""One small real study (tests/data/tiny_study.yaml on a local Ray), run once per test session and
shared by the tests that look at what a study leaves behind: its plots and its MLflow store."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_study.yaml"


@dataclass
class TinyStudy:
    folder: Path          # everything lives here
    uri: str              # the MLflow store (SQLite)
    experiment: str
    study_run_id: str
    results_dir: Path     # the runner's result files (CSV, Markdown, plots/)
    plots: list[str]      # the runner's plot files, relative to results_dir
    final_per_class: dict  # MLflow run id of each final re-run -> its per-class FA, as the runner saw it


def tiny_study(tmp_path_factory) -> TinyStudy:
    """The session's tiny study: run it on a fresh local Ray the first time, then reuse its folder."""
    folder = tmp_path_factory.getbasetemp() / "tiny-study"
    marker = folder / "study.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        return TinyStudy(folder=folder, uri=info["uri"], experiment=info["experiment"],
                         study_run_id=info["study_run_id"], results_dir=Path(info["results_dir"]), plots=info["plots"],
                         final_per_class=info["final_per_class"])

    import ray

    from falw_ray.study.runner import Study

    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    study = Study.from_yaml(TINY)
    ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = study.run(tracking_uri=uri, storage=folder / "store", progress=False)
    finally:
        ray.shutdown()
    plots_dir = result.results_dir / "plots"
    plots = sorted(str(p.relative_to(result.results_dir)) for p in plots_dir.rglob("*.png")) if plots_dir.exists() else []
    per_class = {r.mlflow_run_id: list(r.fa_per_class) for r in result.final.itertuples() if r.fa_per_class}
    info = {"uri": uri, "experiment": study.spec.name, "study_run_id": result.study_run_id,
            "results_dir": str(result.results_dir), "plots": plots, "final_per_class": per_class}
    marker.write_text(json.dumps(info))
    return tiny_study(tmp_path_factory)
