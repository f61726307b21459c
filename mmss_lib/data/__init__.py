"""The data layer: MRHP files (`mrhp`), the Amazon 2018 builder (`amazon2018`), the synthetic
generator (`synthetic`), training pairs (`pairs`) and the model input contract (`batch`)."""
