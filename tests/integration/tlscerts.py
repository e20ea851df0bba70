"""Test certificates made with the openssl command line: one CA, and leaf
certificates for given names with RSA or ECDSA P-256 keys. Made once per
test session in a temporary directory (see the `certs` fixture)."""
import subprocess
from pathlib import Path


def _run(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class Certs:
    def __init__(self, root):
        self.dir = Path(root)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self.dir / "ca.crt"
        self.ca_key = self.dir / "ca.key"
        _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(self.ca_key), "-out", str(self.ca), "-days", "30",
             "-subj", "/CN=mxlb test CA")
        self.serial = 1

    def leaf(self, name, kind="ecdsa", ca=None):
        """(cert path, key path) for a certificate of CN=name with name as
        DNS subjectAltName, signed by the test CA (or self-signed with
        ca=False, for verification failures)."""
        stem = self.dir / f"{name}-{kind}{'' if ca is not False else '-self'}"
        crt, key, csr = Path(f"{stem}.crt"), Path(f"{stem}.key"), Path(f"{stem}.csr")
        if crt.exists():
            return crt, key
        if kind == "rsa":
            _run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key))
        else:
            _run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
        ext = self.dir / f"{name}.ext"
        ext.write_text(f"subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\n")
        _run("req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN={name}")
        if ca is False:
            _run("x509", "-req", "-in", str(csr), "-signkey", str(key), "-out", str(crt),
                 "-days", "30", "-extfile", str(ext))
        else:
            self.serial += 1
            _run("x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey", str(self.ca_key),
                 "-set_serial", str(self.serial), "-out", str(crt), "-days", "30",
                 "-extfile", str(ext))
        return crt, key
