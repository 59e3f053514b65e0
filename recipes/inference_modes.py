"""The study's inference demonstration: batch vs population statistics.

Trains the batch-norm network (ReLU, learning rate 0.01, good weights, 2,000
batches of 60), or restores one saved earlier, then tests it on the whole
test set and on 200 test images fed one at a time: once normalizing with the
batch's own statistics (`training=True`) and once with the population
statistics learned in training (`training=False`).

    python recipes/inference_modes.py
    python recipes/inference_modes.py --save-model-as logs/bn.keras
    python recipes/inference_modes.py --restore-from logs/bn.keras

Expected: on the whole test set both modes are about equally accurate; one
image at a time, batch statistics give the same class for all 200 images
(the study printed 200 eights: accuracy 0.05) while population statistics
predict as well as in a batch. What it printed here, and its time: the
README ("Inference with batch vs population statistics").
"""

from kbn_study.commands.inference_modes import main

if __name__ == "__main__":
    main()
