"""The JAX-vs-PyTorch benchmarks (`python -m learngene_jax.bench`, `learngene bench`; the command is __main__.py): one
module per thing timed (forward, train_step, lm_train_step, expand, input_pipeline), sharing the A/B process runner
(runner.py) and the report (report.py)."""
