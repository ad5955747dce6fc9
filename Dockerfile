# Vigil's container image: vigild and vigil on Debian 12 with OpenCV 4.6 and the ONNX Runtime
# GPU build, so that `--provider cuda` (or tensorrt) runs on an NVIDIA GPU.
#
# NOT BUILT HERE: the machines this project is developed on have no Docker engine and no GPU,
# so this file has never been built or run. The versions are pinned; the ONNX Runtime GPU
# tarball's sha256 could not be recorded without network access to GitHub, so pass it with
# --build-arg ORT_GPU_SHA256=... (the build prints the sum it saw when none is given).
#
#   docker build -t vigil .
#   docker run --gpus all -p 7443:7443 -v /srv/vigil:/data -v /srv/models:/models vigil \
#       --provider cuda --listen 0.0.0.0:7443 --tls-cert /data/tls.crt --tls-key /data/tls.key
#
# Outside model weights are never in the image: mount a folder that holds them at /models
# (a mirror, searched by sha256) or point VIGIL_MODEL_MIRROR at a URL.

ARG GO_VERSION=1.26.8
ARG DEBIAN=bookworm

# ---- build ---------------------------------------------------------------------------------
FROM golang:${GO_VERSION}-${DEBIAN} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libopencv-dev=4.6.0+dfsg-12 pkg-config protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=1 go build -trimpath -o /out/vigild ./cmd/vigild \
 && CGO_ENABLED=1 go build -trimpath -o /out/vigil ./cmd/vigil

# ---- ONNX Runtime, GPU build ---------------------------------------------------------------
FROM debian:${DEBIAN}-slim AS onnxruntime
ARG ORT_VERSION=1.30.0
ARG ORT_GPU_SHA256=
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
RUN curl -fsSL -o /tmp/ort.tgz \
      https://github.com/microsoft/onnxruntime/releases/download/v${ORT_VERSION}/onnxruntime-linux-x64-gpu-${ORT_VERSION}.tgz \
 && sum=$(sha256sum /tmp/ort.tgz | cut -d' ' -f1) \
 && if [ -n "$ORT_GPU_SHA256" ]; then [ "$sum" = "$ORT_GPU_SHA256" ] || { echo "ONNX Runtime tarball sha256 $sum, want $ORT_GPU_SHA256"; exit 1; }; \
    else echo "WARNING: ONNX Runtime tarball not verified; its sha256 is $sum"; fi \
 && mkdir -p /opt/onnxruntime \
 && tar -xzf /tmp/ort.tgz -C /opt/onnxruntime --strip-components=1 \
 && test -e /opt/onnxruntime/lib/libonnxruntime_providers_cuda.so

# ---- runtime -------------------------------------------------------------------------------
FROM debian:${DEBIAN}-slim
# CUDA 12 and cuDNN 9, which the ONNX Runtime 1.30 GPU build is made against, from NVIDIA's
# Debian 12 repository; the driver comes from the host through the NVIDIA container toolkit.
ARG CUDA_KEYRING_VERSION=1.1-1
ARG CUDA_MAJOR_MINOR=12-6
ARG CUDNN_VERSION=9.5.1.17-1
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && curl -fsSL -o /tmp/keyring.deb \
      https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_${CUDA_KEYRING_VERSION}_all.deb \
 && dpkg -i /tmp/keyring.deb && rm /tmp/keyring.deb \
 && apt-get update && apt-get install -y --no-install-recommends \
      cuda-cudart-${CUDA_MAJOR_MINOR} libcublas-${CUDA_MAJOR_MINOR} libcufft-${CUDA_MAJOR_MINOR} \
      libcurand-${CUDA_MAJOR_MINOR} libcudnn9-cuda-12=${CUDNN_VERSION} \
      libopencv-core406 libopencv-imgproc406 libopencv-imgcodecs406 libopencv-videoio406 \
 && apt-get purge -y curl && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
COPY --from=onnxruntime /opt/onnxruntime/lib /opt/onnxruntime/lib
COPY --from=build /out/vigild /out/vigil /usr/local/bin/
ENV VIGIL_ORT_LIB=/opt/onnxruntime/lib/libonnxruntime.so.1 \
    VIGIL_DATA_DIR=/data \
    VIGIL_MODEL_CACHE=/data/model-cache \
    VIGIL_MODEL_MIRROR=/models \
    LD_LIBRARY_PATH=/opt/onnxruntime/lib:/usr/local/cuda/lib64
RUN useradd --system --home /data --uid 10001 vigil && mkdir -p /data && chown vigil /data
USER vigil
VOLUME ["/data"]
EXPOSE 7443 7480
ENTRYPOINT ["vigild"]
CMD ["--listen", "0.0.0.0:7443", "--http", "0.0.0.0:7480"]
