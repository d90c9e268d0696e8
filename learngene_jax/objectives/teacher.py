"""A frozen teacher: any registry model with its weights, run in eval mode under stop_gradient.

Its variables are arguments of the jitted step, never part of the train state, so they are never in the
student's checkpoint.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from learngene_jax import logs
from learngene_jax.data.tokenize import check_table, model_tokenizer, same_tokenizer
from learngene_jax.errors import ConfigError, fail
from learngene_jax.models import create_model, model_spec
from learngene_jax.models.io import load_model
from learngene_jax.models.llama import output_head


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A model and its variables (eval mode); `vocab` > 0 keeps a language model's first `vocab` logits (the
    tokenizer's ids; the rows past them pad the embedding table)."""

    model: nn.Module
    variables: dict[str, Any]
    vocab: int = 0

    def logits(self, variables: dict[str, Any], images: jax.Array, **inputs: jax.Array) -> jax.Array:
        """Eval-mode logits with no gradient path back into the teacher; `inputs`: further model inputs (a text
        batch's document mask and positions)."""
        logits = jax.lax.stop_gradient(self.model.apply(variables, images, train=False, **inputs))
        return logits[..., :self.vocab] if self.vocab else logits

    def features(self, variables: dict[str, Any], tokens: jax.Array, **inputs: jax.Array
                 ) -> tuple[jax.Array, jax.Array]:
        """A teacher language model's eval-mode final hidden states (batch, tokens, width) and its (width, vocab)
        output head (the first `vocab` columns), no gradient path back into it: `logits` is hidden @ head, which
        the chunked loss (objectives/language.py) computes a chunk of tokens at a time."""
        hidden = self.model.apply(variables, tokens, train=False, hidden=True, **inputs)
        head = output_head(self.model, variables["params"])
        head = head[:, :self.vocab] if self.vocab else head
        return jax.lax.stop_gradient(hidden), jax.lax.stop_gradient(head)


def load_teacher(distill: Any, image_size: int, num_classes: int | None = None, tokenizer: Any = None,
                 **runtime: Any) -> Teacher | None:
    """The teacher config.distill asks for (None without distillation). With `num_classes` (the data's), a
    teacher whose logits cover another label set is a ConfigError before anything compiles: its logits are the
    targets, so a 100-class teacher for 10-class data would broadcast, produce NaNs or train on meaningless
    targets. A teacher language model shares the data's `tokenizer` (data/tokenize.py) where its directory ships
    one, and its table holds at least the tokenizer's ids; it is distilled over those ids only."""
    if distill.type == "none":
        return None
    if not distill.teacher_init:
        fail(ConfigError, f"distill.type={distill.type!r} needs teacher weights: pass "
                          f"--config.distill.teacher_init=MODEL_DIR (a model directory from `python -m "
                          f"learngene_jax.convert from-timm` or from a teacher run's WORKDIR/model), "
                          f"or --config.distill.type=none")
    model, variables = load_model(distill.teacher_init, **runtime)
    if hasattr(model, "vocab_size"):  # a teacher language model: same tokenizer, token-level targets
        if num_classes is None:
            return Teacher(model, variables)
        check_table(model.vocab_size, num_classes, f"the teacher at {distill.teacher_init}")
        theirs = model_tokenizer(distill.teacher_init)
        if tokenizer is not None and theirs is not None and not same_tokenizer(tokenizer.to_json(), theirs):
            fail(ConfigError, f"the teacher at {distill.teacher_init} ships another tokenizer than the data's "
                              f"({tokenizer.name}): its logits name other tokens; tokenize the corpus with "
                              f"--config.data.tokenizer={distill.teacher_init} (or learngene tokenize --tokenizer)")
        if model.vocab_size != num_classes:
            logs.note(f"distilling over the tokenizer's {num_classes:,} tokens: KD compares the first {num_classes:,} "
                      f"logits of the teacher ({model.vocab_size:,}-row table) and of the student, each softmax "
                      f"renormalised over them; the padded rows the tokenizer never emits are left out")
        return Teacher(model, variables, vocab=num_classes)
    if distill.teacher:
        want = model_spec(create_model(distill.teacher, num_classes=model.num_classes, image_size=model.image_size))
        if want != model_spec(model):
            fail(ConfigError, f"distill.teacher={distill.teacher!r} but {distill.teacher_init} holds a different "
                              f"architecture ({model_spec(model)['model']}); fix one of the two")
    if model.image_size != image_size:
        fail(ConfigError, f"the teacher takes {model.image_size}px images but the student gets {image_size}px; "
                          f"they must see the same (mixed) images")
    if num_classes is not None:
        classes = getattr(model, "num_classes", None)  # 0: headless (the model returns features)
        if classes is None:
            x = jax.ShapeDtypeStruct((1, image_size, image_size, getattr(model, "in_chans", 3)), jnp.float32)
            classes = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x).shape[-1]
        if not classes:
            fail(ConfigError, f"the teacher at {distill.teacher_init} has no classification head (num_classes=0) "
                              f"but the data has {num_classes} classes: its logits are the distillation targets; "
                              f"give it a head trained on this label set")
        if classes != num_classes:
            fail(ConfigError, f"the teacher at {distill.teacher_init} predicts {classes} classes but the data has "
                              f"{num_classes}: its logits are the distillation targets, so it must be trained on "
                              f"the same label set (fine-tune its head on this data first, or distil on its data)")
    return Teacher(model, variables)
