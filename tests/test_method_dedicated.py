"""dedicated (reference upper bound): one network per subset, trained only on its subset."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from mmbench.benchmark.trainer import Trainer
from mmbench.config import TrainSection, build_section
from mmbench.methods import MethodConfig, method_group, resolve_methods
from mmbench.methods.dedicated import Dedicated, optimizer_name
from mmbench.subsets import ALL_SUBSETS, FULL, MODALITIES, Subset
from mmbench.testing import make_batch

STEPS = 2


def build(seed: int = 0) -> Dedicated:
    torch.manual_seed(seed)
    return Dedicated(MethodConfig(width=2, depth=1, patch_size=(8, 8, 8), total_steps=STEPS))


def tiny_batches(rng: np.random.Generator, n: int) -> dict[str, torch.Tensor]:
    x = torch.as_tensor(rng.standard_normal((n, 4, 8, 8, 8)), dtype=torch.float32)
    y = (x[:, :3] > 0).float()
    return {"image": x, "regions": y, "compartments": y}


def test_registered_as_a_bound_outside_all() -> None:
    assert method_group("bounds") == ["dedicated"]
    assert "dedicated" not in method_group("all")
    assert resolve_methods("bounds") == ["dedicated"]


def test_one_network_per_subset_with_only_its_modalities_as_inputs() -> None:
    model = build()
    assert len(model.nets) == 15
    for s in ALL_SUBSETS:
        assert model.network(s).encoder.stem.conv1.conv.in_channels == s.size
    assert model.parameter_count() == sum(p.numel() for p in model.parameters())
    assert model.training_only_parameter_count() == 0


def test_predict_routes_to_the_subset_network() -> None:
    model = build().eval()
    for subset in (Subset.parse("T2"), Subset.parse("T1+FLAIR"), FULL):
        image = make_batch(subset)["image"][..., :8, :8, :8]
        present = [MODALITIES.index(m) for m in subset.available]
        with torch.no_grad():
            expected = torch.sigmoid(model.network(subset)(image[:, present]))
            assert torch.equal(model.predict(image, subset.available), expected)


def test_each_network_is_trained_only_on_its_own_subset_with_a_full_budget(tmp_path) -> None:
    model = build()
    train = build_section(
        TrainSection,
        {"steps": STEPS, "batch_size": 1, "lr": 0.01, "val_every": 0, "log_every": 1, "amp": "off"},
    )
    calls: list[tuple[str, int]] = []
    for key, net in model.nets.items():
        net.register_forward_hook(
            lambda mod, args, out, key=key: calls.append((key, args[0].shape[1]))
        )
    initial = {k: [p.detach().clone() for p in n.parameters()] for k, n in model.nets.items()}
    trainer = Trainer(model, train, tmp_path, tiny_batches, progress=False, log=lambda s: None)
    assert trainer.total_steps == 15 * STEPS
    assert trainer.stage_steps == [STEPS] * 15
    assert [s.subset for s in trainer.stages] == [s.name for s in ALL_SUBSETS]
    trainer.fit()
    # Every network ran exactly STEPS times, each time on its own subset's channels, in order.
    expected = [(optimizer_name(s), s.size) for s in ALL_SUBSETS for _ in range(STEPS)]
    assert calls == expected
    assert Counter(k for k, _ in calls) == {optimizer_name(s): STEPS for s in ALL_SUBSETS}
    for key, net in model.nets.items():
        moved = any(not torch.equal(a, b) for a, b in zip(initial[key], net.parameters()))
        assert moved, f"{key} was not trained"
    # Each stage restarts the poly schedule: the first step of every stage runs at the full lr.
    rows = (tmp_path / "train_log.csv").read_text().splitlines()
    header = rows[0].split(",")
    lrs = [float(r.split(",")[header.index("lr")]) for r in rows[1:]]
    subsets = [r.split(",")[header.index("subset")] for r in rows[1:]]
    assert subsets == [s.name for s in ALL_SUBSETS for _ in range(STEPS)]
    assert lrs[::STEPS] == [0.01] * 15
