"""The engine: subsets, metrics, training loop, evaluator, runner, results store, presets."""
