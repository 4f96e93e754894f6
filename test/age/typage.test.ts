/**
 * Interop with typage (npm `age-encryption`), a second independent age implementation:
 * X25519, scrypt and armor in both directions, across chunk boundaries.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import * as typage from "age-encryption";
import { decrypt, encrypt } from "../../src/age/index.js";
import { ScryptIdentity, ScryptRecipient } from "../../src/age/scrypt.js";
import { parseIdentityString, parseRecipientString } from "../../src/keys/key-types.js";

const SIZES = [0, 1, 65536, 65537, 150_000];

test("X25519: typage encrypts, nixseal decrypts; nixseal encrypts, typage decrypts (binary and armored)", async () => {
  const theirIdentity = await typage.generateX25519Identity();
  const theirRecipient = await typage.identityToRecipient(theirIdentity);
  for (const size of SIZES) {
    const plain = randomBytes(size);
    const e = new typage.Encrypter();
    e.addRecipient(theirRecipient);
    const fromThem = await e.encrypt(plain);
    const ours = await decrypt(fromThem, [parseIdentityString(theirIdentity, "typage")]);
    assert.deepEqual(Buffer.from(ours), plain, `typage -> nixseal, ${size} bytes`);
    const armoredFromThem = typage.armor.encode(fromThem);
    assert.deepEqual(
      Buffer.from(
        await decrypt(Buffer.from(armoredFromThem), [parseIdentityString(theirIdentity, "typage")]),
      ),
      plain,
    );

    for (const armor of [false, true]) {
      const file = await encrypt(plain, [parseRecipientString(theirRecipient, "typage")], { armor });
      const d = new typage.Decrypter();
      d.addIdentity(theirIdentity);
      const input = armor ? typage.armor.decode(Buffer.from(file).toString("latin1")) : file;
      assert.deepEqual(
        Buffer.from(await d.decrypt(input)),
        plain,
        `nixseal -> typage, ${size} bytes, armor ${armor}`,
      );
    }
  }
});

test("scrypt: passphrase files cross both ways", async () => {
  const pass = "typage interop passphrase";
  const plain = randomBytes(1000);
  const e = new typage.Encrypter();
  e.setPassphrase(pass);
  e.setScryptWorkFactor(10);
  const fromThem = await e.encrypt(plain);
  assert.deepEqual(Buffer.from(await decrypt(fromThem, [new ScryptIdentity(Buffer.from(pass))])), plain);

  const file = await encrypt(plain, [new ScryptRecipient(Buffer.from(pass), 10)]);
  const d = new typage.Decrypter();
  d.addPassphrase(pass);
  assert.deepEqual(Buffer.from(await d.decrypt(file)), plain);
});
