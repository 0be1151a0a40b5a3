# syntax=docker/dockerfile:1
# The Thresher image: every service and the dequeuer, run by command:
#   docker run thresher:dev python -m services.gateway     (scheduler, enqueuer, monitor, dequeuer alike)
# Build: `make image` (or `docker build -t thresher:dev .` from the repository root).

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/thresher
ENV PATH=/opt/thresher/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto/ proto/
COPY thresher/ thresher/
COPY services/ services/
# The generated gRPC code is built here, never copied from a work tree (`make proto` does the same).
RUN pip install grpcio-tools==1.85.1 \
 && python -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/thresher/v1/*.proto \
 && pip install . \
 && pip uninstall -y pip

FROM python:3.11-slim-bookworm
RUN groupadd --gid 10001 thresher \
 && useradd --uid 10001 --gid 10001 --home-dir /home/thresher --create-home --shell /usr/sbin/nologin thresher
COPY --from=build /opt/thresher /opt/thresher
ENV PATH=/opt/thresher/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    THRESHER_DATA_DIR=/var/lib/thresher
RUN install -d -o 10001 -g 10001 /var/lib/thresher
USER 10001:10001
WORKDIR /home/thresher
# gateway 8888; gRPC scheduler 7001, enqueuer 7002, monitor 7003; /metrics monitor 7004, scheduler 7005, enqueuer 7006;
# plaintext gRPC health with TLS on 7010; a worker pod's dequeuer /healthz and /metrics 15000 (deploy/README.md).
EXPOSE 8888 7001 7002 7003 7004 7005 7006 7010 15000
CMD ["python", "-m", "services.gateway"]
