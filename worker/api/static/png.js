// Reading the worker's images in the browser: base64 → bytes, and the PNG text chunks that carry the
// A1111 infotext ("parameters") and the request JSON ("sd-worker").

export function base64Bytes(b64) {
  const text = atob(b64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];
const latin1 = new TextDecoder("latin1");
const utf8 = new TextDecoder("utf-8");

/** keyword → text of every tEXt and uncompressed iTXt chunk ({} for anything that is not a PNG). */
export function pngText(bytes) {
  const found = {};
  if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) return found;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = 8;
  while (offset + 8 <= bytes.length) {
    const length = view.getUint32(offset);
    const type = latin1.decode(bytes.subarray(offset + 4, offset + 8));
    const data = bytes.subarray(offset + 8, offset + 8 + length);
    if (type === "IEND") break;
    const nul = data.indexOf(0);
    if (type === "tEXt" && nul > 0) {
      found[latin1.decode(data.subarray(0, nul))] = latin1.decode(data.subarray(nul + 1));
    } else if (type === "iTXt" && nul > 0 && data[nul + 1] === 0) {
      // keyword \0 compressed(0) method \0-terminated language \0-terminated translated keyword, then UTF-8
      let start = nul + 3;
      start = data.indexOf(0, start) + 1;
      start = data.indexOf(0, start) + 1;
      found[latin1.decode(data.subarray(0, nul))] = utf8.decode(data.subarray(start));
    }
    offset += 12 + length;
  }
  return found;
}
