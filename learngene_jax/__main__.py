"""`python -m learngene_jax COMMAND [ARGS]`: the `learngene` console command without installing the package."""

from learngene_jax.cli import learngene

if __name__ == "__main__":
    learngene()
