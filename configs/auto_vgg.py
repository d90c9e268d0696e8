"""Auto Learngene: the Heur pipeline with the gene blocks chosen from how little each ancestor block changes while
the ancestor keeps learning (genes/auto.py: relative weight change per task, or relative gradient), compared
with the hand-picked last 3 blocks and with scratch descendants on the same inheritable tasks.

    python -m learngene_jax.main --config=configs/auto_vgg.py --workdir=runs/auto_vgg

Offline default: the bundled digits, as configs/heur_vgg.py. Hardware: 2-core CPU shared with other jobs (load
average 6-8), no GPU. Wall time 4 min 14 s with a cold XLA cache (2 min 3 s of CPU), 2 min 9 s warm.
Result: the weight statistic picks blocks 9, 10, 11 (Heur hard-wires 10, 11, 12). 6 inheritable tasks, top-1 mean
± sample std: Auto gene 0.880 ± 0.082, Heur gene 0.898 ± 0.046, scratch 0.876 ± 0.107 (runs/auto_vgg/summary.md).
`statistic=gradients` picks blocks 0, 1, 2 (the input end: a descendant with no random lower stack): Auto gene
0.954 ± 0.038, but a scratch descendant of that same architecture reaches 0.965 ± 0.031 (2 min 31 s warm).
`dataset=cifar100` as in heur_vgg; `smoke=True` for tests.
"""

from learngene_jax.config_lib import heur_recipe, parse_arg


def get_config(arg=None):
    """`arg`: dataset=digits|cifar100, statistic=weights|gradients, smoke=True."""
    args = parse_arg(arg, {"dataset": "digits", "statistic": "weights", "smoke": False})
    c = heur_recipe(args["dataset"], args["smoke"])
    c.task, c.name = "auto", c.name.replace("heur", "auto")
    c.auto.statistic = args["statistic"]
    return c
