"""Auto Learngene: the Heur pipeline with the gene blocks chosen automatically (methods/heur/auto.py) — by default the
paper's criterion as this port reads it: a pseudo descendant (the descendants' architecture, trained on the last
continual task) meta-learns how much to resemble each ancestor block (L2T-ww matching weights), and the gene is
the window of 3 blocks it resembles most — compared with the hand-picked last 3 blocks and with scratch
descendants on the same inheritable tasks. `statistic=weights|gradients`: the least-change alternatives.

    python -m learngene_jax.main --config=configs/auto_vgg.py --workdir=runs/auto_vgg

Offline default: the bundled digits, as configs/heur_vgg.py. Hardware: this project's 2-core CPU VM, no GPU,
with a test run sharing it. Wall time 4 min 1 s (pseudo descendant 144 s of it: 10 epochs, ~40 s compiling the
unrolled meta step). Result (6 inheritable tasks, top-1 mean ± sample std): the pseudo descendant picks blocks
9, 10, 11 (Heur hard-wires 10, 11, 12; window sums 22.4 for 9–11 against 21.4 for 0–2, block 0 scoring highest
alone — a close call); Auto gene 0.929 ± 0.033, Heur gene 0.891 ± 0.121, scratch 0.876 ± 0.099
(runs/auto_vgg/summary.md). Earlier runs of the alternatives: `statistic=weights` picks 9–11 too (0.880 ±
0.082 then), `statistic=gradients` picks 0–2 (0.954 ± 0.038, but a scratch descendant of that architecture
reaches 0.965 ± 0.031). `dataset=cifar100` as in heur_vgg; `smoke=True` for tests.
"""

from pathlib import Path

from learngene_jax.config_lib import config_module, parse_arg


def get_config(arg=None):
    """`arg`: dataset=digits|cifar100, statistic=pseudo_descendant|weights|gradients, smoke=True."""
    args = parse_arg(arg, {"dataset": "digits", "statistic": "pseudo_descendant", "smoke": False})
    c = config_module(Path(__file__).with_name("heur_vgg.py")).heur_recipe(args["dataset"], args["smoke"])
    c.task, c.name = "auto", c.name.replace("heur", "auto")
    c.auto.statistic = args["statistic"]
    return c
