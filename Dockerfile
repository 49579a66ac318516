# deepspeech-flow for GPU machines: the image a Prefect Docker or Kubernetes work pool
# runs train-cv in (docs/DEPLOYMENT.md). Build from the repository root:
#   docker build -t deepspeech-flow:0.1.0 .
# The work directory (corpus, features, checkpoints, export) is NOT in the image: mount
# it at /deepspeech-data (the DeepSpeech playbook's bind mount) so that checkpoints
# outlive the container and a restarted run resumes.
ARG BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu
FROM ${BASE_IMAGE}

# sox with mp3 (Common Voice clips), espeak-ng (demo corpora), a compiler and zlib for
# kenlm (built from source by pip), as `make system-deps`.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        sox libsox-fmt-mp3 espeak-ng g++ make zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DEEPSPEECH_REPO=/opt/deepspeech-flow \
    DEEPSPEECH_WORKDIR=/deepspeech-data

WORKDIR /opt/deepspeech-flow
# As in the Makefile (PYCTCDECODE_VERSION): installed without its numpy<2 pin.
ARG PYCTCDECODE_VERSION=0.5.0

# The base image's TensorFlow (built for its CUDA and cuDNN) is the one to use: install
# the project without a TensorFlow extra, under the lock file with its CPU-only
# TensorFlow pin swapped for the image's, so pip can never replace it.
COPY pyproject.toml constraints.txt README.md ./
COPY deepspeech_core ./deepspeech_core
COPY deepspeech_flow ./deepspeech_flow
COPY flows ./flows
COPY tasks ./tasks
COPY deployments ./deployments
RUN python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), "the project needs Python 3.11, the base image has " + sys.version' \
    && TF_VERSION="$(python3 -c 'import tensorflow as tf; print(tf.__version__)')" \
    && grep -viE '^tensorflow[-_]cpu==' constraints.txt > /tmp/constraints.txt \
    && echo "tensorflow==${TF_VERSION}" >> /tmp/constraints.txt \
    && python3 -m pip install -c /tmp/constraints.txt -e ".[dask]" \
    && python3 -m pip install --no-deps "pyctcdecode==${PYCTCDECODE_VERSION}" \
    && python3 -c 'import tensorflow, prefect, deepspeech_core, flows.train_cv' \
    && rm /tmp/constraints.txt

VOLUME ["/deepspeech-data"]

# Workers start flow runs with their own command (`prefect flow-run execute`); this one
# is for running the CLI in the container by hand.
CMD ["deepspeech-flow", "--help"]
