"""Operations kit: container/Kubernetes files, monitoring config and the `infra.scripts` tools."""
