"""Rule train_run: train one (arch, seed, labels) run, keeping its init and checkpoints."""

from pathlib import Path

import torch

from firstlayer_zoo.dataset_source import prepared_indices
from firstlayer_zoo.dataset_sources import dataset_source
from firstlayer_zoo.paths import step_file
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.training import TrainRun, train

with logged(snakemake):
    torch.set_num_threads(snakemake.threads)
    run = TrainRun.from_dict(snakemake.params.run)
    source = dataset_source(run.dataset, snakemake.params.dataset_options)
    indices = prepared_indices(snakemake.input[0])
    images = [run.preprocessing.apply(image) for image in source.images(Path(snakemake.params.dataset_root), indices)]
    out = Path(snakemake.output[0])
    train(run, images, {step: Path(step_file(out, step)) for step in run.steps})
