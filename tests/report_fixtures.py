"""Synthetic results and run folders for the report's tests and speed benchmark.

The numbers imitate the qualitative pattern of the published tables (removing T1ce hurts ET and
TC, removing FLAIR and T2 hurts WT; some cases have no ET) so that plots look plausible; they are
not results of any method.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mmbench.benchmark.schema import METRICS_FILE, RESULT_COLUMNS, RUN_INFO_FILE
from mmbench.metrics import DEFAULT_MAX_DISTANCE
from mmbench.reporting.family import FAMILY_ORDER
from mmbench.subsets import ALL_SUBSETS

MAX_DISTANCE = DEFAULT_MAX_DISTANCE


def fake_results(
    methods: Sequence[str] = ("alpha", "beta", "gamma"),
    datasets: Sequence[str] = ("synthetic",),
    n_cases: int = 12,
    seed: int = 0,
    empty_policy: str = "penalty",
    hd95_mode: str = "pooled",
    max_distance: float = MAX_DISTANCE,
    et_empty_share: float = 0.15,
) -> pd.DataFrame:
    """Tidy results rows (:data:`RESULT_COLUMNS`) for every method × dataset × subset × case.

    Method ``i`` is better than method ``i+1`` on average. Metrics: dice, hd95, iou, sensitivity,
    specificity and ``ref_voxels``.
    """
    rng = np.random.default_rng(seed)
    regions = ("WT", "TC", "ET")
    frames = []
    for dataset in datasets:
        cases = [f"{dataset}-{i:04d}" for i in range(n_cases)]
        ref_voxels = {
            "WT": rng.integers(20_000, 90_000, n_cases),
            "TC": rng.integers(5_000, 30_000, n_cases),
            "ET": np.where(
                rng.random(n_cases) < et_empty_share, 0, rng.integers(1_000, 9_000, n_cases)
            ),
        }
        difficulty = rng.normal(0.0, 0.05, n_cases)
        for mi, method in enumerate(methods):
            quality = 0.9 - 0.03 * mi
            for subset in ALL_SUBSETS:
                have = dict(zip(("T1", "T1ce", "T2", "FLAIR"), subset.mask))
                for region in regions:
                    penalty = 0.0
                    if region in ("ET", "TC") and not have["T1ce"]:
                        penalty += 0.35 if region == "ET" else 0.2
                    if region == "WT" and not (have["FLAIR"] or have["T2"]):
                        penalty += 0.3
                    penalty += 0.02 * (4 - subset.size)
                    noise = rng.normal(0.0, 0.04, n_cases)
                    dice = np.clip(quality - penalty - difficulty + noise, 0.0, 1.0)
                    empty = ref_voxels[region] == 0
                    # On an empty reference a method is either right (nothing predicted) or wrong.
                    hit = rng.random(n_cases) < quality - penalty / 2
                    dice = np.where(empty, hit.astype(float), dice)
                    hd95 = np.where(
                        empty, np.where(hit, 0.0, max_distance), 2.0 + 40.0 * (1.0 - dice) ** 2
                    )
                    iou = dice / (2.0 - dice)
                    sens = np.clip(dice + rng.normal(0.02, 0.03, n_cases), 0, 1)
                    spec = np.clip(1.0 - rng.random(n_cases) * 1e-3, 0, 1)
                    values = {
                        "dice": dice,
                        "hd95": hd95,
                        "iou": iou,
                        "sensitivity": np.where(empty, np.nan, sens),
                        "specificity": spec,
                        "ref_voxels": ref_voxels[region].astype(float),
                    }
                    for metric, vals in values.items():
                        frames.append(
                            pd.DataFrame(
                                {
                                    "dataset": dataset,
                                    "method": method,
                                    "seed": 0,
                                    "fold": 0,
                                    "case": cases,
                                    "subset": subset.name,
                                    "region": region,
                                    "metric": metric,
                                    "value": vals,
                                }
                            )
                        )
    out = pd.concat(frames, ignore_index=True)
    out["empty_policy"] = empty_policy
    out["hd95_mode"] = hd95_mode
    out["max_distance"] = max_distance
    return out[list(RESULT_COLUMNS)]


def write_run_folders(
    results: pd.DataFrame,
    root: str | Path,
    families: dict[str, str] | None = None,
    params: dict[str, float] | None = None,
    status: str = "complete",
    extra_info: dict | None = None,
    config: dict | None = None,
    per_method_info: dict[str, dict] | None = None,
) -> list[Path]:
    """Write ``results`` as run folders ``<root>/<dataset>/<method>/seed<S>-fold<F>/``.

    ``config`` is written as each run's ``config.yaml`` (with an ``environment.json`` naming a
    commit) when given; ``per_method_info`` adds keys to the ``run.json`` of one method.
    """
    root = Path(root)
    written = []
    for (dataset, method, seed, fold), rows in results.groupby(
        ["dataset", "method", "seed", "fold"], sort=False
    ):
        run = root / str(dataset) / str(method) / f"seed{seed}-fold{fold}"
        run.mkdir(parents=True, exist_ok=True)
        rows.to_csv(run / METRICS_FILE, index=False)
        index = sorted(results["method"].unique()).index(method)
        info = {
            "dataset": dataset,
            "method": method,
            "family": (families or {}).get(method, FAMILY_ORDER[index % 6]),
            "paper": f"{method} et al.",
            "params": (params or {}).get(method, 1e6 * (index + 1) * 3.5),
            "seed": int(seed),
            "fold": int(fold),
            "preset": "test",
            "status": status,
            **(extra_info or {}),
            **(per_method_info or {}).get(method, {}),
        }
        (run / RUN_INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
        if config is not None:
            import yaml

            (run / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
            env = {"git_commit": "0123456789abcdef", "packages": {"mmbench": "0.1.0"}}
            (run / "environment.json").write_text(json.dumps(env), encoding="utf-8")
        written.append(run)
    return written
