"""Auto Learngene: the Heur pipeline with the gene blocks chosen automatically (methods/heur/auto.py) — by default the
paper's criterion as this port reads it: a pseudo descendant (the descendants' architecture, trained on the last
continual task) meta-learns how much to resemble each ancestor block (L2T-ww matching weights), and the gene is
the window of 3 blocks it resembles most — compared with the hand-picked last 3 blocks and with scratch
descendants on the same inheritable tasks. `statistic=weights|gradients`: the least-change alternatives.

    python -m learngene_jax.main --config=configs/auto_vgg.py --workdir=runs/auto_vgg

Offline default: the bundled digits, as configs/heur_vgg.py. Hardware: this project's 2-core CPU VM, no GPU.
Wall time 221 s for seed 0 (pseudo descendant: 20 epochs of L2T-ww's meta step). Result over seeds 0, 1, 2
(docs/records/auto_vgg_seed{0,1,2}.json; docs/methods/heur-auto.md has the table): the pseudo
descendant picks blocks 10-12 (seeds 0, 2; Heur's hand-picked blocks) and 8-10 (seed 1), where the meta-off
control (λ at its init, every block tied) would pick 0-2; Auto gene 0.891 / 0.944 / 0.906 top-1 (mean over 6
inheritable tasks), Heur gene 0.891 / 0.869 / 0.906, scratch 0.876 / 0.880 / 0.877. `statistic=weights` picks
9-11 and `statistic=gradients` 0-2 in the same runs. `dataset=cifar100` as in heur_vgg; `smoke=True` for tests.
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
