# One image for the coordinator, the task services and the operator CLI; the command picks the process:
#   docker run IMAGE                                  -> rc-coordinator (the default)
#   docker run IMAGE rc-task examples.portal:Portal   -> a task service
#   docker run IMAGE rc --help                        -> the operator CLI
#   docker run IMAGE rc-dashboard                     -> the web dashboard (port 8780)
# Credentials come only from the environment (RC_AMQP_URL, RC_MONGODB_URL) at run time, never from the image.

FROM python:3.13-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY . .
RUN pip install ".[all]"

FROM python:3.13-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app \
    RC_NAMESPACE=rc
RUN groupadd --system --gid 10001 rc \
    && useradd --system --uid 10001 --gid rc --home-dir /app --no-create-home --shell /usr/sbin/nologin rc \
    && mkdir -p /var/lib/rc && chown rc:rc /var/lib/rc
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The example task services and the health checks are not part of the installed package: importable
# through PYTHONPATH, owned by root so the service user cannot change them.
COPY examples ./examples
# deploy/ whole: /app comes first on the path, so a package there hides the installed one (the health checks
# and rc-admin-setup, which the compose file runs as broker-definitions, both import from it).
COPY deploy/*.py ./deploy/
# A task service's outcome store (RC_TASK_STATE_DIR); mount a volume here to keep it across restarts.
VOLUME ["/var/lib/rc"]
USER rc:rc
# Prometheus metrics of the coordinator (RC_METRICS_PORT); the dashboard (RC_DASHBOARD_LISTEN). Both listen on
# the loopback unless told otherwise: set RC_METRICS_ADDRESS=0.0.0.0 and RC_DASHBOARD_LISTEN=0.0.0.0:8780 to
# publish them (docker-compose.yml does, on the host's loopback only).
EXPOSE 9464 8780
CMD ["rc-coordinator"]
