# nixseal built from this repository, with no network access at build time: the npm
# dependencies come from package-lock.json through importNpmLock (each tarball fetched by its
# lockfile integrity hash), so there is no separate npmDepsHash to keep in sync.
{
  lib,
  buildNpmPackage,
  importNpmLock,
  nodejs_24,
  makeWrapper,
  util-linux,
  getent,
}:
let
  packageJson = lib.importJSON ../package.json;
in
buildNpmPackage {
  pname = "nixseal";
  inherit (packageJson) version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../package.json
      ../package-lock.json
      ../tsconfig.json
      ../src
      ../test
      ../bench
      ../nix
    ];
  };

  nodejs = nodejs_24;
  npmDeps = importNpmLock { npmRoot = ../.; };
  npmConfigHook = importNpmLock.npmConfigHook;

  nativeBuildInputs = [ makeWrapper ];

  # `npm run build` compiles src, test and bench (one tsconfig), then bundles the CLI into
  # dist/bundle (the `bin`); dist/src and dist/bundle are packed ("files" in package.json): the
  # bundle opens the worker threads, the generator runner and the fetcher in dist/src.
  npmBuildScript = "build";

  # `nixseal install` mounts ramfs/tmpfs (mount) and resolves users through NSS (getent).
  postInstall = ''
    wrapProgram $out/bin/nixseal \
      --prefix PATH : ${
        lib.makeBinPath [
          util-linux
          getent
        ]
      }
  '';

  meta = {
    description = packageJson.description;
    license = lib.licenses.mit;
    mainProgram = "nixseal";
    platforms = lib.platforms.linux;
  };
}
