# nixseal's Nix library (the flake's `lib` output).
{
  # The systemd credentials convention for module authors: mkCredential, credentialName, ...
  # (docs/systemd-credentials.md).
  credentials = import ./credentials.nix;
}
