"""Predict on image files, folders or dataset splits with one or more checkpoints.

``python predict.py --ckpt runs/x/version_0/checkpoints/best.ckpt IMAGES_OR_FOLDERS --out preds.csv``
(``python predict.py --help``). The CLI's ``python train.py predict --config ... --ckpt_path ...`` predicts on
the datamodule's split instead.
"""

from lit_vision.predict_images import main

if __name__ == "__main__":
    main()
