"""Heur / Auto Learngene with LoRA on a stream of text tasks, against plain LoRA (methods/heur/lm_stream.py): LoRA
adapters on a frozen trained decoder learn the source tasks in turn; the adapters of 2 layers (Heur: the last,
Auto: the least changing) start a new task's LoRA; loss against epochs, epochs to plain LoRA's final loss, and the
loss with half the data. The base decoder is any Llama / GPT-2 model directory, e.g. the LM demo's teacher:

    learngene train --config configs/lm_lora.py --config.init=runs/lm_demo/teacher/model --workdir runs/lm_lora

Tasks are stdlib packages (data.documents patterns), so the corpus is `stdlib`; for another corpus set
`lora_stream.sources` and `lora_stream.target` to patterns of its document names. `:smoke=True` is a tiny version.
"""

from pathlib import Path

from learngene_jax.config_lib import load_config, parse_arg


def get_config(arg=None):
    """`arg`: smoke=True for a tiny version (tests)."""
    smoke = parse_arg(arg, {"smoke": False})["smoke"]
    c = load_config(Path(__file__).with_name("lm_demo.py"), f"smoke={smoke}")
    c.task, c.name = "lm_lora_stream", "lm_lora"
    del c.lm_demo
    return c
