"""``python -m ser ...`` runs the ``ser`` command group; ``torchrun --nproc-per-node N -m ser train
--store feats.h5 --model cnn2d`` trains data-parallel (DDP) without the library importing the CLI."""

from ser.cli import main

if __name__ == "__main__":
    main(prog_name="python -m ser")
