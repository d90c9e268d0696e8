"""The `learngene` console command (also `python -m learngene_jax`): the top floor of the package. It dispatches to
the entry points and holds the command that belongs to no lower module (`expand`); no module imports it. What every
entry point shares (`errors.run`: a user error is one line on stderr and exit code 2) lives a floor down."""

from __future__ import annotations

import sys

from learngene_jax.errors import UserError, int_list, run

# `learngene COMMAND ...`: each verb is an existing entry point (`python -m learngene_jax.X` takes the same flags) or
# a command of this module. train/adapt/sweep take absl flags (--config FILE[:k=v] --workdir W --config.key=value ...).
COMMANDS = {
    "train": "run a config (teacher, aux/gene, descendant, baseline, experiment): --config FILE[:k=v] --workdir W",
    "adapt": "fine-tune the descendant of a gene: --gene G --depth N --config FILE[:k=v] --workdir W",
    "sweep": "one descendant per depth from a gene, one summary: --gene G --depths 2,4,6,8 --config F --workdir W",
    "expand": "write a gene's descendant (untrained) as a model directory: --gene G --depth N --out DIR",
    "convert": "timm / official / gene file conversions (see `learngene convert -h`)",
    "predict": "logits of a model or gene on images (see `learngene predict -h`)",
    "generate": "continue text prompts with a language model, KV-cached (see `learngene generate -h`)",
    "eval-lm": "sliding-window perplexity of a language model on a text or corpus split (see `learngene eval-lm -h`)",
    "analyze": "layer-linearity analysis (see `learngene analyze -h`)",
    "results": "record an experiment workdir (docs/records) and render the results page (see `learngene results -h`)",
    "bench": "JAX vs PyTorch benchmarks (see `learngene bench -h`)",
    "tokenize": "a text corpus → memory-mapped token files (see `learngene tokenize -h`)",
}
MODULES = {"convert": "learngene_jax.convert.__main__", "predict": "learngene_jax.predict",
           "generate": "learngene_jax.generate", "eval-lm": "learngene_jax.eval_lm",
           "analyze": "learngene_jax.analyze", "results": "learngene_jax.results",
           "bench": "learngene_jax.bench.__main__", "tokenize": "learngene_jax.tokenize_corpus"}


def learngene(argv: list[str] | None = None) -> None:
    """The `learngene` console command: `learngene COMMAND [ARGS]` (COMMANDS lists them)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        width = max(map(len, COMMANDS))
        print("usage: learngene COMMAND [ARGS]\n\ncommands:\n" + "\n".join(
            f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()))
        sys.exit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command in MODULES:
        import importlib

        run(importlib.import_module(MODULES[command]).main, rest)
    elif command in ("train", "adapt", "sweep"):
        _absl_command(command, rest)
    elif command == "expand":
        run(expand, rest)
    else:
        print(f"error: unknown command {command!r}; known: {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)


def _absl_command(command: str, rest: list[str]) -> None:
    """train / adapt / sweep through `learngene_jax.main` (absl flags, distributed start-up, one error path)."""
    import argparse
    import functools

    from learngene_jax import main

    task, recorded = None, list(rest)
    if command in ("adapt", "sweep"):
        p = argparse.ArgumentParser(prog=f"learngene {command}", add_help=False)
        p.error = _one_line_error
        p.add_argument("--gene", required=True)
        p.add_argument("--depth" if command == "adapt" else "--depths", required=True)
        known, rest = p.parse_known_args(rest)
        if command == "adapt":
            rest = [*rest, f"--config.gene={known.gene}", f"--config.depth={known.depth}"]
        else:
            from learngene_jax.experiments import sweep

            try:
                depths = int_list(known.depths)
            except UserError as e:
                print(f"error: --depths: {e}", file=sys.stderr)
                sys.exit(2)
            task = functools.partial(sweep.run, gene=known.gene, depths=depths)
    sys.argv = [f"learngene {command}", *rest]
    main.run(program=f"learngene {command}", task=task, recorded=recorded)


def _one_line_error(message: str) -> None:
    """argparse's error(), as the toolkit's one `error:` line and exit status 2 (no usage block)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def expand(argv: list[str] | None = None) -> None:
    """`learngene expand`: the descendant a gene expands into at --depth, saved as a model directory (no training)."""
    import argparse

    import jax

    from learngene_jax import genes
    from learngene_jax.genes.io import load_gene
    from learngene_jax.models.io import save_model

    p = argparse.ArgumentParser(prog="learngene expand", description=expand.__doc__)
    p.add_argument("--gene", required=True, help="gene directory (a stage-1 WORKDIR/gene or a converted gene)")
    p.add_argument("--depth", type=int, default=None, help="descendant depth (SWS: may come from --layers-source)")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--layers-source", default=None, help="SWS: the stage each layer copies, e.g. 0,0,1,1,2")
    p.add_argument("--layout", default="official", choices=["official", "exact"])
    p.add_argument("--num-classes", type=int, default=None, help="a fresh head for this many classes")
    p.add_argument("--seed", type=int, default=0, help="for parts the gene does not hold (a new head)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    gene = load_gene(args.gene)
    kw = dict(layers_source=args.layers_source, layout=args.layout, num_classes=args.num_classes)
    model = genes.descendant_model(gene, args.depth, **kw)
    params = genes.expand(gene, args.depth, rng=jax.random.key(args.seed), **kw)
    out = save_model(args.out, model, {"params": params}, overwrite=args.overwrite, origin=f"gene:{args.gene}")
    print(f"wrote the depth-{model.depth} descendant of {args.gene} to {out}")
