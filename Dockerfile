# One image for every Studio service (web, worker, beat, gateway, migrate, engine-proxy); docker-compose.yml
# picks the command. BASE_IMAGE lets an offline site build from a python:3.11 image it mirrors itself.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=studio.settings \
    STUDIO_HOME=/data \
    STATIC_ROOT=/app/staticfiles

RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin studio \
    && install -d -o studio -g studio /data

WORKDIR /app

# The pinned runtime dependencies first, read from pyproject.toml (with the `optimize` extra the workers
# convert models with): this layer is rebuilt only when they change, not on every code change.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['optimize']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Editable, so templates/ and static/ stay beside the code where settings.BASE_DIR finds them. The code
# stays owned by root: the service user can read it, not change it. manage.py makes what it writes private
# to its user (root, here), so the collected static files are then opened to the service user.
COPY . .
RUN pip install --no-deps --editable . \
    && SECRET_KEY=collectstatic-only STUDIO_HOME=/tmp/build-home python manage.py collectstatic --noinput -v 0 \
    && chmod -R a+rX "$STATIC_ROOT" \
    && rm -rf /tmp/build-home

USER studio
VOLUME ["/data"]
EXPOSE 8000 8080

CMD ["uvicorn", "studio.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", \
     "--no-access-log", "--lifespan", "off", "--proxy-headers"]
