package api

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandkeep/sandkeep/internal/blobstore"
	"github.com/sandkeep/sandkeep/internal/metastore"
	"github.com/sandkeep/sandkeep/internal/pack"
	"github.com/sandkeep/sandkeep/internal/tree"
	pb "github.com/sandkeep/sandkeep/proto/sandkeep/v1"
)

func versionKindToPB(k metastore.VersionKind) pb.VersionKind {
	switch k {
	case metastore.KindSync:
		return pb.VersionKind_VERSION_KIND_SYNC
	case metastore.KindFlush:
		return pb.VersionKind_VERSION_KIND_FLUSH
	case metastore.KindRollback:
		return pb.VersionKind_VERSION_KIND_ROLLBACK
	case metastore.KindUpload:
		return pb.VersionKind_VERSION_KIND_UPLOAD
	}
	return pb.VersionKind_VERSION_KIND_UNSPECIFIED
}

func versionKindFromPB(k pb.VersionKind) metastore.VersionKind {
	switch k {
	case pb.VersionKind_VERSION_KIND_FLUSH:
		return metastore.KindFlush
	case pb.VersionKind_VERSION_KIND_ROLLBACK:
		return metastore.KindRollback
	case pb.VersionKind_VERSION_KIND_UPLOAD:
		return metastore.KindUpload
	}
	return metastore.KindSync
}

// VersionToPB converts a stored version.
func VersionToPB(v metastore.Version) *pb.Version {
	return &pb.Version{
		Number: v.Number, Parent: v.Parent, Root: v.Root.Bytes(), Kind: versionKindToPB(v.Kind),
		CreateTime: timestamppb.New(v.CreatedAt), SandboxId: v.SandboxID, Files: v.Files, Bytes: v.Bytes, Pinned: v.Pinned,
	}
}

func projectToPB(p metastore.Project) *pb.Project {
	return &pb.Project{Id: p.ID, Name: p.Name, CreateTime: timestamppb.New(p.CreatedAt), Head: p.Head}
}

func signedToPB(u blobstore.SignedURL) *pb.SignedRequest {
	return &pb.SignedRequest{Method: u.Method, Url: u.URL, Headers: u.Headers, ExpireTime: timestamppb.New(u.Expires)}
}

func entryTypeToPB(t tree.NodeType) pb.EntryType {
	switch t {
	case tree.File:
		return pb.EntryType_ENTRY_TYPE_FILE
	case tree.Dir:
		return pb.EntryType_ENTRY_TYPE_DIRECTORY
	case tree.Symlink:
		return pb.EntryType_ENTRY_TYPE_SYMLINK
	}
	return pb.EntryType_ENTRY_TYPE_UNSPECIFIED
}

func codecToPB(c uint8) pb.Codec {
	switch pack.Codec(c) {
	case pack.None:
		return pb.Codec_CODEC_NONE
	case pack.Zstd:
		return pb.Codec_CODEC_ZSTD
	case pack.Group:
		return pb.Codec_CODEC_ZSTD_GROUP
	}
	return pb.Codec_CODEC_UNSPECIFIED
}

func chunksToPB(cs []tree.ChunkRef) []*pb.ChunkRef {
	out := make([]*pb.ChunkRef, len(cs))
	for i, c := range cs {
		out[i] = &pb.ChunkRef{Id: c.ID.Bytes(), Size: int64(c.Size)}
	}
	return out
}
