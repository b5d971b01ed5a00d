"""Rule train_run: train one (arch, seed, labels) run, keeping its init and checkpoints."""

from pathlib import Path

import torch

from firstlayer_zoo.dataset_sources.base import prepared_indices
from firstlayer_zoo.dataset_sources import dataset_source
from firstlayer_zoo.labelled import load_labelled
from firstlayer_zoo.paths import checkpoint_file
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.train_runs import TrainRun
from firstlayer_zoo.training import labelled_data, photo_crop_data, train

with logged(snakemake):
    torch.set_num_threads(snakemake.threads)
    run = TrainRun.from_dict(snakemake.params.run)
    datasets = {name: (dataset_source(name, dataset["options"]), Path(dataset["root"]),
                       prepared_indices(dataset["manifest"]))
                for name, dataset in snakemake.params.datasets.items()}
    if run.task == "photo_crops":
        source, root, indices = datasets[run.dataset]
        data = photo_crop_data(run, [run.preprocessing.apply(image) for image in source.images(root, indices)])
    else:
        test = load_labelled(*datasets[run.test_dataset], run.preprocessing) if run.test_dataset else None
        data = labelled_data(run, *load_labelled(*datasets[run.dataset], run.preprocessing), test)
    out = Path(snakemake.output[0])
    speed = train(run, data, {position: Path(checkpoint_file(out, run.unit, position)) for position in run.steps})
    print(f"{speed['steps']} steps on {speed['device']} in {speed['seconds']:.1f} s: "
          f"{speed['images_per_s']:.0f} images/s")
