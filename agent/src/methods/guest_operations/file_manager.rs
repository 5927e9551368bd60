//! GuestFileManager: directories and files in the guest (make, delete, move, temporary
//! names, list, attributes), run by the guest as the authenticated user, and the one-time
//! transfer URLs of InitiateFileTransferToGuest / FromGuest (`file_transfer.rs`).

use vireo_api::schema::Schema;
use vireo_api::{DataObject, Fault, Value};
use vireo_tools::guest_ops::wire::{FileEntry, FileKind, FileList, GuestOp, PathResult};

use super::{date_time, flag_arg, parse, run, GuestRequest};
use crate::methods::{Call, Handler, MethodTable, PendingResult};

/// GuestFileManager's methods.
pub const METHODS: MethodTable = MethodTable {
    ty: "GuestFileManager",
    methods: &[
        ("MakeDirectoryInGuest", Handler::Async(make_directory)),
        ("DeleteFileInGuest", Handler::Async(delete_file)),
        ("DeleteDirectoryInGuest", Handler::Async(delete_directory)),
        ("MoveFileInGuest", Handler::Async(move_file)),
        ("MoveDirectoryInGuest", Handler::Async(move_directory)),
        (
            "CreateTemporaryFileInGuest",
            Handler::Async(create_temporary_file),
        ),
        (
            "CreateTemporaryDirectoryInGuest",
            Handler::Async(create_temporary_directory),
        ),
        ("ListFilesInGuest", Handler::Async(list_files)),
        (
            "ChangeFileAttributesInGuest",
            Handler::Async(change_attributes),
        ),
        (
            "InitiateFileTransferToGuest",
            Handler::Async(super::file_transfer::to_guest),
        ),
        (
            "InitiateFileTransferFromGuest",
            Handler::Async(super::file_transfer::from_guest),
        ),
    ],
};

/// Runs an operation that returns nothing.
async fn run_void(call: &Call<'_>, op: GuestOp, file: &str) -> Result<Option<Value>, Fault> {
    run(call, GuestRequest::on_file(op, file)).await?;
    Ok(None)
}

fn make_directory<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(async move {
        let path = call.str_arg("directoryPath")?.to_string();
        let parents = flag_arg(call, "createParentDirectories");
        run_void(
            call,
            GuestOp::MakeDirectory {
                path: path.clone(),
                parents,
            },
            &path,
        )
        .await
    })
}

fn delete_file<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(async move {
        let path = call.str_arg("filePath")?.to_string();
        run_void(call, GuestOp::DeleteFile { path: path.clone() }, &path).await
    })
}

fn delete_directory<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(async move {
        let path = call.str_arg("directoryPath")?.to_string();
        let recursive = flag_arg(call, "recursive");
        run_void(
            call,
            GuestOp::DeleteDirectory {
                path: path.clone(),
                recursive,
            },
            &path,
        )
        .await
    })
}

fn move_file<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(async move {
        let from = call.str_arg("srcFilePath")?.to_string();
        let to = call.str_arg("dstFilePath")?.to_string();
        let overwrite = flag_arg(call, "overwrite");
        let op = GuestOp::MoveFile {
            from: from.clone(),
            to,
            overwrite,
        };
        run_void(call, op, &from).await
    })
}

fn move_directory<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(async move {
        let from = call.str_arg("srcDirectoryPath")?.to_string();
        let to = call.str_arg("dstDirectoryPath")?.to_string();
        run_void(
            call,
            GuestOp::MoveDirectory {
                from: from.clone(),
                to,
            },
            &from,
        )
        .await
    })
}

/// CreateTemporaryFile/DirectoryInGuest: the path the guest made.
async fn create_temporary(call: &Call<'_>, directory: bool) -> Result<Option<Value>, Fault> {
    let schema = call.schema;
    let dir = call
        .arg("directoryPath")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    let op = GuestOp::CreateTemporary {
        prefix: call.str_arg("prefix")?.to_string(),
        suffix: call.str_arg("suffix")?.to_string(),
        dir: dir.clone(),
        directory,
    };
    let request = GuestRequest::on_file(op, dir.as_deref().unwrap_or_default());
    let made: PathResult = parse(schema, run(call, request).await?)?;
    Ok(Some(Value::from(made.path)))
}

fn create_temporary_file<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(create_temporary(call, false))
}

fn create_temporary_directory<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(create_temporary(call, true))
}

/// A guest file's attributes as GuestPosixFileAttributes.
pub(crate) fn posix_attributes(schema: &Schema, file: &FileEntry) -> DataObject {
    let mut attributes = DataObject::of(schema, "GuestPosixFileAttributes");
    if let Some(mtime) = file.mtime {
        attributes.set(schema, "modificationTime", date_time(mtime));
    }
    if let Some(atime) = file.atime {
        attributes.set(schema, "accessTime", date_time(atime));
    }
    if let Some(target) = &file.target {
        attributes.set(schema, "symlinkTarget", target.as_str());
    }
    if let Some(uid) = file.uid {
        attributes.set(schema, "ownerId", uid as i32);
    }
    if let Some(gid) = file.gid {
        attributes.set(schema, "groupId", gid as i32);
    }
    if let Some(mode) = file.mode {
        attributes.set(schema, "permissions", i64::from(mode));
    }
    attributes
}

fn file_info(schema: &Schema, file: FileEntry) -> Value {
    let kind = match file.kind {
        FileKind::File => "file",
        FileKind::Directory => "directory",
        FileKind::Symlink => "symlink",
    };
    DataObject::of(schema, "GuestFileInfo")
        .with(schema, "path", file.name.as_str())
        .with(schema, "type", kind)
        .with(schema, "size", file.size as i64)
        .with(schema, "attributes", posix_attributes(schema, &file))
        .into()
}

fn list_files<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(async move {
        let schema = call.schema;
        let path = call.str_arg("filePath")?.to_string();
        let number = |name: &str| {
            call.arg(name)
                .and_then(Value::as_i64)
                .map_or(0, |n| n.clamp(0, i64::from(u32::MAX)) as u32)
        };
        let op = GuestOp::ListFiles {
            path: path.clone(),
            index: number("index"),
            max: number("maxResults"),
            pattern: call
                .arg("matchPattern")
                .and_then(Value::as_str)
                .map(str::to_string),
        };
        let listed: FileList = parse(schema, run(call, GuestRequest::on_file(op, &path)).await?)?;
        let files: Vec<Value> = listed
            .files
            .into_iter()
            .map(|f| file_info(schema, f))
            .collect();
        let info = DataObject::of(schema, "GuestListFileInfo")
            .with(
                schema,
                "files",
                Value::Array(schema.known_type("GuestFileInfo"), files),
            )
            .with(
                schema,
                "remaining",
                listed.remaining.min(i32::MAX as u64) as i32,
            );
        Ok(Some(info.into()))
    })
}

fn change_attributes<'c>(call: &'c mut Call<'_>) -> PendingResult<'c> {
    Box::pin(async move {
        let schema = call.schema;
        let path = call.str_arg("guestFilePath")?.to_string();
        let attributes = call.arg("fileAttributes").and_then(Value::as_data);
        let field = |name: &str| attributes.and_then(|a| a.get(schema, name));
        let seconds = |name: &str| match field(name) {
            Some(Value::DateTime(micros)) => Some(micros.div_euclid(1_000_000)),
            _ => None,
        };
        let id = |name: &str| {
            field(name)
                .and_then(Value::as_i64)
                .and_then(|v| u32::try_from(v).ok())
        };
        let op = GuestOp::ChangeAttributes {
            path: path.clone(),
            mode: id("permissions"),
            uid: id("ownerId"),
            gid: id("groupId"),
            mtime: seconds("modificationTime"),
            atime: seconds("accessTime"),
        };
        run_void(call, op, &path).await
    })
}
