"""brainseg: segmentation of FLAIR abnormalities in brain MRI (Kaggle LGG dataset)."""
