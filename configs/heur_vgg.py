"""Heur Learngene (AAAI 2022) with a VGG ancestor: continual tasks → ancestor widened (Net2Wider) between tasks →
gene = its last 3 Conv-BN-ReLU blocks with their BatchNorm statistics → per inheritable task, a descendant from
that same gene (EWC λ = 40 on the inherited blocks) and a scratch descendant of the same architecture.

    python -m learngene_jax.main --config=configs/heur_vgg.py --workdir=runs/heur_vgg

Offline default: the bundled digits; base classes 0..4, novel 5..9, 3-way tasks, 5 shots (config_lib.heur_recipe
says why); the 13-block ancestor at 1/4 of the official widths, 5 continual tasks of 3 epochs; descendants 30
epochs of SGD (lr 5e-3, momentum 0.9, weight decay 5e-4, batch 5).
Hardware: 2-core CPU shared with other jobs (load average 6-8), no GPU. Wall time 4 min 12 s with a cold XLA
compilation cache (2 min 1 s of CPU), 1 min 24 s warm.
Result, 6 inheritable tasks, top-1 on all test images of each task's classes, mean ± sample std over tasks:
gene 0.898 ± 0.046, scratch 0.876 ± 0.107 (per task and stage times: runs/heur_vgg/summary.md).
`dataset=cifar100` is the official protocol (64/16/20 classes, 5-way, 21 ancestor tasks of 300 images per class,
10 shots, 100 ancestor epochs per task; cifar100 prepared with tfds in array_record format); not run here.
`smoke=True` runs in seconds (tests).
"""

from learngene_jax.config_lib import heur_recipe, parse_arg


def get_config(arg=None):
    """`arg`: dataset=digits|cifar100, smoke=True."""
    args = parse_arg(arg, {"dataset": "digits", "smoke": False})
    return heur_recipe(args["dataset"], args["smoke"])
