"""python -m learngene_jax.bench {forward,train-step,lm-train-step,expand,input,memory} — throughput of JAX next to the
PyTorch reference, and the memory of a recipe's training step.

`forward`: a jitted eval forward of a model with a timm counterpart (LeViT) against timm's.
`train-step`: one training step of the trainer (loss, gradients, AdamW with the DeiT no-decay rule, and for
`--stage aux` the frozen LeViT teacher on the same images with the DeiT soft-distillation loss) against the
same step in PyTorch (timm models, torch.optim.AdamW, the official losses; eager, and `torch.compile` with
`--compile`).
`lm-train-step`: one training step of the trainer on a Llama decoder (`--config`'s recipe, the LM demo's by default:
next-token cross-entropy, AdamW, gradient clipping) against Hugging Face transformers' LlamaForCausalLM with the same
weights, tokens and optimizer in PyTorch; tokens/s, and both frameworks' losses at the first and the last step.
`expand`: gene → descendant params against the official PyTorch rule.
`input`: images/s of the host input pipeline (`data.make_loader` with a config's train transform) against timm's
`create_transform` + torch `DataLoader` with the same settings and number of workers, with the CPU cores busy,
the bytes per image sent to the device and the peak RSS of the main and worker processes.
`memory`: a language-model recipe's training step compiled ahead of time from shapes alone (`--devices N` fake CPU
devices with its mesh), never run: XLA's memory analysis per device (arguments, temporaries, outputs, generated
code) as one JSON line.

Each framework is timed in its own process (`--framework NAME` runs one), one process at a time, A/B/A/B for
`--rounds` rounds: in one process under load the PyTorch figure once fell to 0.1–0.25× that of an independent
process. Per framework the report gives the median over rounds and the spread (min–max), and the ratio of the
frameworks pair by pair (same round). Prints a table, then one JSON object per framework (last lines).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable

from learngene_jax import hostmem
from learngene_jax.bench import expand, forward, input_pipeline, lm_train_step, memory, train_step
from learngene_jax.bench.input_pipeline import DEFAULT_CONFIG, INPUT_FRAMEWORKS
from learngene_jax.bench.lm_train_step import LM_CONFIG, LM_DEPTH, same_loss_line
from learngene_jax.bench.report import combine, describe_input, describe_step, report_input, report_steps
from learngene_jax.bench.runner import SYSTEM_MALLOC, run_rounds
from learngene_jax.bench.train_step import with_mfu
from learngene_jax.data.text import BYTE_VOCAB
from learngene_jax.errors import UserError, fail, run


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line: one subcommand per thing timed."""
    p = argparse.ArgumentParser(prog="python -m learngene_jax.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--system-malloc", action="store_true", help="run without the transparent huge pages "
                        "that learngene_jax.hostmem gives malloc's big blocks (both frameworks)")
    common.add_argument("--rounds", type=int, default=2, help="processes per framework, A/B/A/B (default 2)")

    def framework_option(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
        parser.add_argument("--framework", choices=list(names), default=None,
                            help="time only this framework, in this process, and print its JSON row (what "
                                 "each round runs)")

    f = sub.add_parser("forward", parents=[common],
                       help="eval-mode forward pass (jitted JAX vs timm under torch.inference_mode)")
    f.add_argument("--model", required=True, help="a LeViT variant (levit_128s ... levit_384)")
    f.add_argument("--batch", type=int, default=32)
    f.add_argument("--img", type=int, default=224)
    f.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    f.add_argument("--steps", type=int, default=10, help="timed steps per process")
    f.add_argument("--warmup", type=int, default=2, help="untimed steps after the first (compiling) one")
    f.add_argument("--skip-timm", action="store_true", help="time JAX alone (no torch needed)")
    framework_option(f, ["jax", "timm"])
    f.set_defaults(check=forward.check, frameworks=forward.frameworks, run_one=forward.run_one, key="step_ms",
                   describe=describe_step, report=report_steps)

    steps = argparse.ArgumentParser(add_help=False)  # the train-step benchmarks' device, precision and timing
    steps.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    steps.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: compute dtype (GPU), "
                       "params and optimizer state stay float32; torch uses autocast")
    steps.add_argument("--compile", action="store_true", help="also time torch.compile")
    steps.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU (default: known GPUs)")
    steps.add_argument("--steps", type=int, default=10, help="timed steps per process")
    steps.add_argument("--warmup", type=int, default=2, help="untimed steps after the first (compiling) one")
    steps.add_argument("--skip-torch", action="store_true", help="time JAX alone (no torch needed)")

    t = sub.add_parser("train-step", parents=[common, steps],
                       help="one training step: the trainer's jitted step vs PyTorch (timm, AdamW)")
    t.add_argument("--model", default="vit_ti", help="student size: vit_ti, vit_s or vit_b")
    t.add_argument("--stage", default="descendant", choices=["descendant", "aux"],
                   help="descendant: a plain ViT fine-tune step; aux: TLEG aux + frozen teacher + soft KD")
    t.add_argument("--depth", type=int, default=12)
    t.add_argument("--img", type=int, default=224)
    t.add_argument("--patch", type=int, default=16)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--classes", type=int, default=1000)
    t.add_argument("--teacher", default="levit_384", help="teacher for --stage aux")
    t.add_argument("--scan", action="store_true", help="run the blocks with lax.scan (faster compiles)")
    framework_option(t, ["jax", "torch", "torch_compile"])
    t.set_defaults(check=train_step.check, frameworks=train_step.frameworks, run_one=train_step.run_one,
                   key="step_ms", describe=describe_step, report=report_steps)

    m = sub.add_parser("lm-train-step", parents=[common, steps],
                       help="one training step of a Llama decoder: the trainer's jitted step vs transformers' "
                            "LlamaForCausalLM (AdamW)")
    m.add_argument("--config", default=LM_CONFIG, help="configs/X.py[:arg] whose decoder, batch, context and "
                   "optimizer are timed (default: the LM demo's)")
    m.add_argument("--depth", type=int, default=LM_DEPTH, help=f"layers (default {LM_DEPTH}, the LM demo's teacher)")
    m.add_argument("--vocab", type=int, default=BYTE_VOCAB, help=f"vocabulary (default {BYTE_VOCAB}: byte tokens)")
    m.add_argument("--width", type=int, help="model width (default: the config's)")
    m.add_argument("--heads", type=int, help="attention heads (default: the config's)")
    m.add_argument("--kv-heads", type=int, help="key/value heads (default: the config's)")
    m.add_argument("--mlp-dim", type=int, help="SwiGLU hidden size (default: the config's)")
    m.add_argument("--batch", type=int, help="sequences per step (default: the config's batch_size)")
    m.add_argument("--context", type=int, help="tokens per sequence (default: the config's data.context)")
    framework_option(m, ["jax", "torch", "torch_compile"])
    m.set_defaults(check=lm_train_step.check, frameworks=train_step.frameworks, run_one=lm_train_step.run_one,
                   key="step_ms", describe=describe_step, report=report_steps)

    e = sub.add_parser("expand", parents=[common],
                       help="time expanding a TLEG gene into a descendant param tree (vs PyTorch)")
    e.add_argument("--size", default="b", choices=["ti", "s", "b"])
    e.add_argument("--depth", type=int, default=12)
    e.add_argument("--steps", type=int, default=10)
    e.add_argument("--warmup", type=int, default=2)
    e.add_argument("--skip-torch", action="store_true")
    framework_option(e, ["jax", "torch"])
    e.set_defaults(check=None, frameworks=expand.frameworks, run_one=expand.run_one, key="step_ms",
                   describe=describe_step, report=report_steps)

    i = sub.add_parser("input", parents=[common],
                       help="images/s of the host input pipeline vs timm's transform + torch DataLoader")
    i.add_argument("--data", required=True, help="folder:DIR, an image folder DIR/<split>/<class>/<images> "
                   "(python -m learngene_jax.data.make_folder writes one)")
    i.add_argument("--workers", type=int, default=2, help="worker processes of both pipelines (0: in process)")
    i.add_argument("--batch", type=int, default=64)
    i.add_argument("--steps", type=int, default=12, help="timed batches per process")
    i.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    i.add_argument("--config", default=DEFAULT_CONFIG, help="configs/X.py[:arg] whose train transform is timed "
                   "(default: the DeiT ImageNet recipe of TLEG-S)")
    i.add_argument("--img", type=int, default=None, help="image size (default: the config's data.image_size)")
    framework_option(i, INPUT_FRAMEWORKS)
    i.set_defaults(check=input_pipeline.check, frameworks=input_pipeline.frameworks, run_one=input_pipeline.run_one,
                   key="images_per_s", describe=describe_input, report=report_input)

    y = sub.add_parser("memory", help="a language-model recipe's compiled training step: XLA's memory analysis per "
                       "device, from shapes alone (nothing runs)")
    y.add_argument("--config", required=True, help="configs/X.py[:arg], a recipe with objective 'lm'")
    y.add_argument("--devices", type=int, default=0, help="compile for this many fake CPU devices (the recipe's "
                   "chips; default 0: the devices JAX has)")
    y.add_argument("--vocab", type=int, default=0, help="vocabulary (default: config.memory_estimate.vocab or "
                   "config.model.vocab_size; a run takes it from its tokenizer)")
    y.add_argument("--teacher", default=None, help="a Hugging Face or model directory whose architecture is the "
                   "teacher's (weights are not read; default: config.distill.teacher_init, else "
                   "config.memory_estimate.teacher)")
    y.set_defaults(check=memory.check, measure=memory.measure)
    return p


def main(argv: list[str] | None = None) -> int | None:
    """Parse, time each framework in its own processes (or, with --framework, time one here), report."""
    args = build_parser().parse_args(argv)
    if args.command == "memory":  # measured here, once: nothing to time against another framework
        args.check(args)
        print(json.dumps(args.measure(args)))
        return None
    if args.system_malloc:
        os.environ[SYSTEM_MALLOC] = "1"  # read by runner._child_env
    for name in ("batch", "img", "steps", "depth", "rounds", "width", "heads", "kv_heads", "mlp_dim", "vocab",
                 "context"):
        if getattr(args, name, None) is not None and getattr(args, name) < 1:
            fail(UserError, f"--{name.replace('_', '-')} must be >= 1")
    if args.check is not None:
        args.check(args)
    malloc = "glibc, huge pages" if hostmem.huge_pages_active() else "glibc defaults"
    if args.framework:
        print(json.dumps({**args.run_one(args, args.framework), "malloc": malloc,
                          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}))
        return None
    child_argv = list(sys.argv[1:] if argv is None else argv)
    results, failures = run_rounds(child_argv, args.frameworks(args), args.rounds, args.describe)
    rows = combine(results, args.key) if results else []
    if args.command == "forward" and "timm" in results:
        print(f"same weights: {results['timm'][0]['check']}")
    if args.command == "lm-train-step" and len(results) > 1:
        print(same_loss_line(results))
    if args.command in ("train-step", "lm-train-step"):
        rows = with_mfu(rows)
    if rows:
        args.report(rows)
    if failures:
        print("error: " + "; ".join(failures), file=sys.stderr)
        return 1
    return None


if __name__ == "__main__":
    run(main)
