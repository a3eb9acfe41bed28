"""ORM models, one module per aggregate. Importing this package registers them all."""

from app.models.artifact import Artifact, ArtifactKind
from app.models.base import Base
from app.models.build import Build, JobStatus
from app.models.cluster import Cluster
from app.models.node import Node, NodeEvent
from app.models.repository import (
    GarbageCollection,
    Publication,
    PublicationEntry,
    PublicationFile,
    Repository,
    RepositoryCredential,
    RepositoryPoolFile,
    RepositorySuite,
)
from app.models.rollout import AgentJob, Rollout
from app.models.token import ApiToken, TokenKind

__all__ = ["AgentJob", "ApiToken", "Artifact", "ArtifactKind", "Base", "Build", "Cluster",
           "GarbageCollection",
           "JobStatus", "Node", "NodeEvent", "Publication", "PublicationEntry",
           "PublicationFile", "Repository", "RepositoryCredential", "RepositoryPoolFile",
           "RepositorySuite", "Rollout", "TokenKind"]
