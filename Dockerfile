# The recsys_ray image: the official Ray image of the pinned Ray version plus this
# package. Used by the KubeRay manifests in deploy/kuberay/.
#
#   docker build -t REGISTRY/recsys-ray:0.1.0 .
#   docker build --build-arg EXTRAS=train -t REGISTRY/recsys-ray:0.1.0-train .   # with torch (CPU)
FROM rayproject/ray:2.60.0-py311

# Optional extras of the package, e.g. "train" for the Ray Train example (torch).
ARG EXTRAS=""
# torch comes from its CPU wheel index, so the image carries no CUDA libraries.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# The base image's non-root user (uid 1000) owns its Python environment.
USER ray
COPY --chown=ray:users pyproject.toml README.md /tmp/recsys-ray/
COPY --chown=ray:users recsys_ray /tmp/recsys-ray/recsys_ray
RUN pip install --no-cache-dir --extra-index-url "${TORCH_INDEX_URL}" "/tmp/recsys-ray${EXTRAS:+[${EXTRAS}]}" \
    && rm -rf /tmp/recsys-ray \
    && python -c "import ray, recsys_ray; assert ray.__version__ == '2.60.0', ray.__version__" \
    && recsys-ray --help > /dev/null

# Arrow's allocator returns freed pages to the OS at once, so a Ray worker that
# goes idle after a large task does not keep that task's peak resident
# (recsys_ray.runtime.ALLOCATOR_ENV sets the same for a local Ray).
ENV MIMALLOC_PURGE_DELAY=0

WORKDIR /home/ray
