"""The data layer: tracklets, labelled image sets, readers for real layouts and the synthetic world.

Pure numpy (+ Pillow for image files); never imports the compiled kernels.

* :class:`Tracklets`: ragged runs of person crops (frames or image paths, CSR ``offsets``, video,
  camera, frame index, ground-truth identity, optional features) with ``select``, ``save`` and
  ``load`` (the tracklet-directory format).
* :class:`ImageSet`, :func:`read_market1501`, :func:`write_market1501`: labelled person images and
  the Market-1501 layout.
* :func:`read_tracklet_folders`: tracker output as ``<video>/<track>/<frame>.jpg|png``.
* :func:`tracklets_from_mot`: tracker output as MOTChallenge text (``frame,id,x,y,w,h,conf,...``)
  beside its frames (a folder of images, or a video with PyAV): crops written as a tracklet directory.
* :func:`read_image`, :func:`read_images`, :func:`write_image`: image files as uint8 RGB arrays
  (a batch of mixed sizes resized to one on request).
* :func:`cion_fast.data.prefetch.prefetch`: the next batches of image files decoded by threads,
  a bounded number ahead (feature extraction from image files uses it).
* :mod:`cion_fast.data.synth`: the synthetic pedestrian world (:class:`~cion_fast.data.synth.WorldConfig`,
  :func:`~cion_fast.data.synth.generate`, :func:`~cion_fast.data.synth.measure_tracker_noise`).

Example:
    >>> from cion_fast.data import synth
    >>> world = synth.generate(synth.WorldConfig.quick(identities=10, train_identities=3, eval_identities=3, videos=3))
    >>> world.tracklets.frames.shape[1:], world.query.camids.dtype
    ((128, 64, 3), dtype('int64'))
"""

from __future__ import annotations

from cion_fast.data._io import read_image, read_images, write_image
from cion_fast.data.readers import (ImageSet, Market1501, read_cuhk03, read_dataset, read_dukemtmc, read_market1501,
                                    read_msmt17, read_tracklet_folders, write_market1501)
from cion_fast.data.mot import tracklets_from_mot
from cion_fast.data.tracklets import Tracklets

__all__ = [
    "Tracklets",
    "ImageSet",
    "Market1501",
    "read_market1501",
    "read_dukemtmc",
    "read_cuhk03",
    "read_msmt17",
    "read_dataset",
    "write_market1501",
    "read_tracklet_folders",
    "tracklets_from_mot",
    "read_image",
    "read_images",
    "write_image",
]
