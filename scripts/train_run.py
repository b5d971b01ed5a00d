"""Rule train_run: train one (arch, seed, labels) run, keeping its init and checkpoints."""

from pathlib import Path

import torch

from firstlayer_zoo.datasets import dataset_source
from firstlayer_zoo.labelled import load_labelled
from firstlayer_zoo.rule_io import logged
from firstlayer_zoo.train_runs import checkpoint_file
from firstlayer_zoo.training import TrainRun, labelled_data, photo_crop_data, train

with logged(snakemake):
    torch.set_num_threads(snakemake.threads)
    run = TrainRun.from_dict(snakemake.params.run)
    datasets = snakemake.params.datasets
    roots = {name: Path(manifest).parent for name, manifest in zip(datasets, snakemake.input)}
    if run.task == "photo_crops":
        source = dataset_source(run.dataset, datasets[run.dataset])
        data = photo_crop_data([run.preprocessing.apply(image) for image in source.images(roots[run.dataset])], run)
    else:
        test = (load_labelled(run.test_dataset, datasets[run.test_dataset], roots[run.test_dataset], run.preprocessing)
                if run.test_dataset else None)
        data = labelled_data(run, *load_labelled(run.dataset, datasets[run.dataset], roots[run.dataset],
                                                 run.preprocessing), test)
    out = Path(snakemake.output[0])
    speed = train(run, data, {position: out / checkpoint_file(run.unit, position) for position in run.steps})
    print(f"{speed['steps']} steps on {speed['device']} in {speed['seconds']:.1f} s: "
          f"{speed['images_per_s']:.0f} images/s")
