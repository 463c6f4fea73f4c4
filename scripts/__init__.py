"""Helper scripts of sgformer-trt (shell scripts, and the GPU check package ``scripts.gpu_check``). A regular
package, so a ``scripts`` package installed elsewhere on a machine cannot shadow this one."""
