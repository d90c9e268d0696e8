"""A plain ViT on the bundled digits (a scratch baseline; quick check that training works).

    python -m learngene_jax.main --config=configs/digits_vit.py --workdir=runs/digits_vit

2-core CPU: about 20 s for 10 epochs; reaches ~0.9 top-1 on the 450 test images.
"""

from learngene_jax.config_lib import base_config, parse_arg


def get_config(arg=None):
    """`arg`: depth=N,epochs=N."""
    args = parse_arg(arg, {"depth": 4, "epochs": 10})
    c = base_config()
    c.name = f"digits_vit_L{args['depth']}"
    c.model.update({"name": "vit", "width": 192, "num_heads": 3, "patch_size": 4, "depth": args["depth"],
                    "drop_path_rate": 0.0, "scan_layers": False})
    c.epochs = args["epochs"]
    c.batch_size = 32
    c.optim.update({"scale_lr": False, "lr": 5e-4, "warmup_epochs": 0.5})
    return c
