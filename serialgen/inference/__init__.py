"""Using trained models outside the stage that trains them: standardizing images and serial generation, shared
by the stages that standardize, train on, evaluate and serve them (so no stage imports another)."""
