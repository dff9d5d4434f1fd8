# Stand-in for `heartexlabs/label-studio:1.23.2` where no registry is reachable: the same
# version from PyPI on the local base. Data in /label-studio/data; the first start creates the
# admin from LABEL_STUDIO_USERNAME / _PASSWORD / _USER_TOKEN, as the official image does.
ARG BASE_IMAGE=al-base:bookworm
FROM ${BASE_IMAGE}
ARG LS_VERSION=1.23.2
RUN pip install --no-cache-dir "label-studio==${LS_VERSION}" \
    && useradd --create-home --uid 1001 --user-group labelstudio \
    && mkdir -p /label-studio/data && chown -R labelstudio:labelstudio /label-studio
ENV LABEL_STUDIO_BASE_DATA_DIR=/label-studio/data PYTHONUNBUFFERED=1
USER labelstudio
WORKDIR /label-studio
VOLUME ["/label-studio/data"]
EXPOSE 8080
ENTRYPOINT ["label-studio"]
CMD ["start", "--no-browser", "--internal-host", "0.0.0.0", "-p", "8080"]
