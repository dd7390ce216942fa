"""The ground every stage stands on: params, paths, errors, atomic files, CPU kernels, the raw data."""
