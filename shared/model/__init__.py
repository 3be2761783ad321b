"""The model: the SASRec network, bundles, the ANN index, ranking, re-ranking and explanations."""
