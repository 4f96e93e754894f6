# nixseal's Nix library (the flake's `lib` output): fetchers with secrets, fixed-output
# derivations that get their credential from the nixseal broker at build time (issue: build-time
# secrets). Empty until that lands; kept so the flake's interface is stable.
{ }
