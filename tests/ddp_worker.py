"""One process of the 2-process CPU DDP test: a smoke run that also writes which training images it loaded.

Run by tests/test_training.py under torch.distributed.run; arguments: OUT_DIR DATA_DIR."""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from fastai.callback.core import Callback
from fastai.torch_core import rank_distrib

from cifar_study.data import CIFAR100_MEAN, CIFAR100_STD
from cifar_study.training import train_model


class SeenImages(Callback):
    "Hash every training image this process loads in the first epoch (as uint8 HWC bytes); write them when the fit ends."
    def __init__(self, path):
        self.path, self.hashes = Path(path), []

    def before_batch(self):
        if self.training and self.epoch == 0:
            mean, std = np.array(CIFAR100_MEAN)[:, None, None], np.array(CIFAR100_STD)[:, None, None]
            for x in self.xb[0].numpy():  # undo the normalisation: 'none' augmentation leaves the pixels as stored
                pixels = np.rint((x * std + mean) * 255).astype(np.uint8).transpose(1, 2, 0)
                self.hashes.append(hashlib.sha1(pixels.tobytes()).hexdigest())

    def after_fit(self):
        self.path.write_text(json.dumps(self.hashes))


if __name__ == '__main__':
    out, data = sys.argv[1:3]
    train_model('resnet_20', profile='smoke', data_dir=data, out=out, epochs=2, augment='none', batch_size=32,
                cbs=[SeenImages(Path(out)/f'seen-rank{rank_distrib()}.json')])
